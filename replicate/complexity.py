"""Parameter and multiply-accumulate counts of the zoo (fvcore), and their check against the published figures.

Conventions: ``params`` counts every trainable tensor once (a shared basis once, BN included); ``macs`` is
fvcore's total for one image in eval mode (conv, linear, batch-norm, pooling), ``conv_linear_macs`` only
convolutions and linear layers, ``flops = 2 * macs``, and ``folded_macs`` the total of the model folded for
inference (``models.fold``: each decomposed conv merged into one conv where that is cheaper). A shared basis
is counted at every call, as fvcore traces the executed graph (ptflops >= 0.7 and thop count it per
registration and inflate the figure). ``blocks_per_basis`` is how many blocks each shared basis serves
(averaged over the bases; empty when nothing is shared), what the sharing-depth figure plots. Counts are keyed
by :class:`ModelSpec`, so every option that changes the network (sharing depth, unshared BatchNorms) changes
its counts.

Importing this module needs no torch: the committed cache answers for every network the shipped tables train
(planning, tables and figures read it); only :func:`measure` builds a network, importing torch then.

The published check compares each printed figure under its source's convention: 2020 READMEs and the figure
give FLOPs as 2 x MACs, the 2021 README as MACs. A README figure matches when our count rounds to the printed
digits, a digitised figure point when it lies within the digitisation tolerance; rows known to contradict
the code carry a flag and are reported as ``flagged`` when the figures the flag does not concern match.

CLI::

    python -m replicate.complexity ResNet56-S16U1* ResNet56 --dataset cifar10 [--format table|csv|json|md]
    python -m replicate.complexity --published [--format ...]   # exit 1 on any mismatch
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import textwrap
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from . import published
from .catalog import ZOO_DATASETS
from .errors import Parser, cli
from .zoo import ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

CONV_LINEAR_OPS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")
CACHE = "data/complexity.csv"


@dataclass(frozen=True)
class Complexity:
    model: str
    dataset: str
    sharing_depth: int | None
    unshared_bn: bool
    params: int
    macs: int
    conv_linear_macs: int
    flops: int
    folded_macs: int
    blocks_per_basis: float | None = None  # blocks each shared basis serves, mean over bases; None: no sharing

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.model, self.dataset, self.sharing_depth, self.unshared_bn)


def count_params(model: "nn.Module") -> int:
    """Trainable parameters, each tensor once (``parameters()`` already de-duplicates shared tensors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: "nn.Module", input_size: int) -> tuple[int, int]:
    """(fvcore total, conv+linear only) multiply-accumulates for one image, model in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():  # torch.jit deprecation notices raised inside fvcore's tracer
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, torch.zeros(1, 3, input_size, input_size))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            logging.getLogger("fvcore").setLevel(logging.ERROR)
            by_operator = analysis.by_operator()
            conv_linear = sum(v for k, v in by_operator.items() if k in CONV_LINEAR_OPS)
            return int(analysis.total()), int(conv_linear)
    finally:
        model.train(was_training)


@lru_cache(maxsize=None)
def measure(spec: ModelSpec) -> Complexity:
    """Complexity of a zoo model, counted on the network itself (cached: tracing big models takes seconds)."""
    from .models import DecomposedConv, build, fold  # the one place a count builds a network

    model = build(spec)
    size = model.config.input_size
    macs, conv_linear = count_macs(model, size)
    decomposed = any(isinstance(m, DecomposedConv) for m in model.modules())
    folded_macs = count_macs(fold(model), size)[0] if decomposed else macs
    return Complexity(spec.name, spec.dataset, spec.sharing_depth, spec.unshared_bn, count_params(model), macs,
                      conv_linear, 2 * macs, folded_macs, blocks_per_basis(model))


def blocks_per_basis(model: "nn.Module") -> float | None:
    """Blocks each shared basis of the network serves, averaged over its bases (None: it shares none).

    A block is a module with a decomposed convolution as a direct child; a depth larger than a stage of a
    shallower network (the mini profile's ResNet20) is counted where it really is."""
    from .models import DecomposedConv

    users: dict[int, set[int]] = defaultdict(set)
    for block in model.modules():
        for child in block.children():
            if isinstance(child, DecomposedConv) and child.shared is not None:
                users[id(child.shared)].add(id(block))
    return round(sum(len(blocks) for blocks in users.values()) / len(users), 6) if users else None


_PARSE = {"int": int, "float": float, "bool": lambda text: text == "True", "str": str}  # by annotation


def _from_csv(record: dict[str, str]) -> Complexity:
    """One cache row as :func:`cache_text` writes it: an empty cell is None, others read by the field's type."""
    return Complexity(**{f.name: None if record[f.name] == "" else _PARSE[f.type.split(" |")[0]](record[f.name])
                         for f in fields(Complexity)})


@lru_cache(maxsize=None)
def cached() -> dict[ModelSpec, Complexity]:
    """The committed counts of the models the shipped tables train (kept equal to :func:`measure` by a test).

    Read with the csv module: answering a plan from the cache must not pay for pandas or torch."""
    path = resources.files("replicate").joinpath(CACHE)
    if not path.is_file():
        return {}
    entries = [_from_csv(record) for record in csv.DictReader(io.StringIO(path.read_text()))]
    return {entry.spec: entry for entry in entries}


def lookup(spec: ModelSpec) -> Complexity:
    """Like :func:`measure`, but answered from the committed cache when possible (planning must be fast)."""
    return cached().get(spec) or measure(spec)


def cache_text(specs: list[ModelSpec], progress: bool = False) -> str:
    """The cache file's content for ``specs``, each measured afresh (None written as an empty cell)."""
    from tqdm import tqdm

    out = io.StringIO()
    writer = csv.DictWriter(out, [f.name for f in fields(Complexity)], lineterminator="\n")
    writer.writeheader()
    for spec in tqdm(specs, desc="measuring", disable=not progress):
        writer.writerow({k: "" if v is None else v for k, v in asdict(measure(spec)).items()})
    return out.getvalue()


# -- the published figures -------------------------------------------------------------------------------------
def check_entry(entry: published.Entry, params: int, macs: int) -> dict:
    """Compare one published entry with our counts; returns a report row with a verdict."""
    tolerance = entry.tolerance or {}
    flops = published.to_flops(macs, entry.flops_convention)
    ok = {
        "params": entry.params is None or entry.params.matches(params, tolerance.get("params_M")),
        "flops": entry.flops is None or entry.flops.matches(flops, tolerance.get("flops_G")),
    }
    unflagged_ok = all(v for k, v in ok.items() if k not in entry.flagged_fields)
    verdict = "mismatch" if not unflagged_ok else "flagged" if entry.flag else "match"
    return {
        "source": entry.source, "dataset": entry.dataset, "label": entry.label, "model": entry.model,
        "params_published": entry.params.text if entry.params else "", "params_ours": params,
        "flops_published": entry.flops.text if entry.flops else "", "flops_ours": flops,
        "flops_convention": entry.flops_convention, "verdict": verdict,
        "explanation": entry.flag["explanation"] if entry.flag else "",
    }


def compare_published(progress: bool = False) -> "pd.DataFrame":
    """Every published Params/FLOPs figure against our fvcore counts (one row per published entry)."""
    import pandas as pd
    from tqdm import tqdm

    rows = []
    for entry in tqdm(published.load(), desc="published figures", unit="figure", disable=not progress):
        counts = lookup(ModelSpec(entry.model, entry.dataset))
        rows.append(check_entry(entry, counts.params, counts.macs))
    return pd.DataFrame(rows)


def _render(frame: "pd.DataFrame", fmt: str) -> str:
    if fmt == "json":
        return json.dumps(frame.to_dict(orient="records"), indent=2)
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "md":
        return frame.to_markdown(index=False)
    return frame.to_string(index=False)


def _published_table(frame: "pd.DataFrame") -> str:
    """The check as a table that fits 120 columns, each flag's explanation as a numbered footnote."""
    import pandas as pd

    notes = list(dict.fromkeys(e for e in frame.explanation if e))
    table = pd.DataFrame({
        "source": frame.source, "dataset": frame.dataset, "label": frame.label,
        "params": frame.params_published + " / " + (frame.params_ours / 1e6).map("{:.3f}M".format),
        "FLOPs": frame.flops_published + " / " + (frame.flops_ours / 1e9).map("{:.3f}G".format)
        + frame.flops_convention.map({"2xMACs": " (2xMACs)", "MACs": " (MACs)"}),
        "verdict": frame.verdict + frame.explanation.map(lambda e: f" [{notes.index(e) + 1}]" if e else ""),
    })
    footnotes = "\n".join(textwrap.fill(f"[{i}] {note}", 118, subsequent_indent="    ")
                          for i, note in enumerate(notes, 1))
    return f"published / ours\n{table.to_string(index=False)}\n\n{footnotes}"


@cli
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m replicate.complexity", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("models", nargs="*", metavar="NAME", help="zoo names, e.g. ResNet56-S16U1*")
    parser.add_argument("--dataset", choices=ZOO_DATASETS, default=None, help="the models' dataset")
    parser.add_argument("--sharing-depth", type=int, metavar="N", help="one basis per N consecutive blocks")
    parser.add_argument("--no-unshared-bn", action="store_true", help="the BatchNorm ablation")
    parser.add_argument("--published", action="store_true",
                        help="compare every published Params/FLOPs figure with our counts")
    parser.add_argument("--format", choices=("table", "csv", "json", "md"), default="table", help="output format")
    args = parser.parse_args(argv)
    if args.published:
        frame = compare_published(progress=sys.stderr.isatty())
        print(_render(frame, args.format) if args.format != "table" else _published_table(frame))
        counts = frame.verdict.value_counts()
        print(f"{len(frame)} published entries: {counts.get('match', 0)} match, {counts.get('flagged', 0)} "
              f"flagged (explained), {counts.get('mismatch', 0)} mismatch",
              file=sys.stdout if args.format == "table" else sys.stderr)
        return 1 if counts.get("mismatch", 0) else 0
    if not args.models or args.dataset is None:
        parser.error("give one or more model names and --dataset (or --published)")
    import pandas as pd

    specs = [ModelSpec(name, args.dataset, args.sharing_depth, not args.no_unshared_bn) for name in args.models]
    print(_render(pd.DataFrame([asdict(measure(spec)) for spec in specs]), args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
