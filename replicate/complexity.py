"""Parameter and multiply-accumulate counts of the zoo (fvcore), and the check against published figures.

Conventions (SPEC §3.7): ``params`` counts every trainable tensor once (a shared basis once, BN included);
``macs`` is fvcore's total for one image in eval mode (conv, linear, batch-norm, pooling), ``conv_linear_macs``
only convolutions and linear layers, ``flops = 2 * macs``, and ``folded_macs`` the total of the model folded
for inference (``models.fold``: each decomposed conv merged into one conv where that is cheaper). A shared
basis is counted at every call, as fvcore traces the executed graph (ptflops >= 0.7 and thop count it per
registration and inflate the figure).

CLI::

    python -m replicate.complexity ResNet56-S16U1* ResNet56 --dataset cifar10 [--format table|csv|json|md]
    python -m replicate.complexity --published [--format ...]   # exit 1 on any mismatch
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .errors import cli
from .models import DecomposedConv, create, fold, parse
from .models.registry import INPUT_SIZE

CONV_LINEAR_OPS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")


@dataclass(frozen=True)
class Complexity:
    model: str
    dataset: str
    params: int
    macs: int
    conv_linear_macs: int
    flops: int
    folded_macs: int


def count_params(model: nn.Module) -> int:
    """Trainable parameters, each tensor once (``parameters()`` already de-duplicates shared tensors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(fvcore total, conv+linear only) multiply-accumulates for one image, model in eval mode."""
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
def measure(name: str, dataset: str) -> Complexity:
    """Complexity of a zoo model by name (cached: building and tracing the big models takes seconds)."""
    model = create(name, dataset)
    macs, conv_linear = count_macs(model, INPUT_SIZE[dataset])
    folded_macs = count_macs(fold(model), INPUT_SIZE[dataset])[0] if _has_decomposed(model) else macs
    return Complexity(model.config.name, dataset, count_params(model), macs, conv_linear, 2 * macs, folded_macs)


def _has_decomposed(model: nn.Module) -> bool:
    return any(isinstance(m, DecomposedConv) for m in model.modules())


CACHE = "data/complexity.csv"


@lru_cache(maxsize=None)
def _cache() -> dict[tuple[str, str], Complexity]:
    """Committed counts of the models the shipped tables use (kept equal to ``measure`` by a test)."""
    path = resources.files("replicate").joinpath(CACHE)
    if not path.is_file():
        return {}
    frame = pd.read_csv(io.StringIO(path.read_text()))
    return {(r.model, r.dataset): Complexity(**r._asdict()) for r in frame.itertuples(index=False)}


def lookup(name: str, dataset: str) -> Complexity:
    """Like :func:`measure`, but answered from the committed cache when possible (planning must be fast)."""
    canonical = parse(name, dataset).name
    return _cache().get((canonical, dataset)) or measure(canonical, dataset)


def cached_models() -> list[tuple[str, str]]:
    """Every (model, dataset) the shipped tables (all profiles) and the published data refer to."""
    from . import published, spec
    from .config import PROFILES
    from .plan import profile_model

    pairs = {(e.model, e.dataset) for e in published.load()}
    for name in spec.available():
        for row in spec.load(name).rows:
            pairs |= {(parse(profile_model(row.model, p), row.dataset).name, row.dataset)
                      for p in PROFILES.values() if p.model_depth is None or row.dataset == "cifar10"}
    return sorted(pairs)


def write_cache() -> Path:
    """Measure every cached model afresh and rewrite the committed cache file."""
    rows = [asdict(measure(model, dataset)) for model, dataset in cached_models()]
    path = Path(str(resources.files("replicate").joinpath(CACHE)))
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(frame.to_dict(orient="records"), indent=2)
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "md":
        return frame.to_markdown(index=False)
    return frame.to_string(index=False)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.complexity", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", metavar="NAME", help="zoo names, e.g. ResNet56-S16U1*")
    parser.add_argument("--dataset", choices=("cifar10", "cifar100", "imagenet"), default=None)
    parser.add_argument("--published", action="store_true",
                        help="compare every published Params/FLOPs figure with our counts")
    parser.add_argument("--format", choices=("table", "csv", "json", "md"), default="table")
    parser.add_argument("--write-cache", action="store_true",
                        help=f"re-measure the models of the shipped tables into replicate/{CACHE}")
    args = parser.parse_args(argv)
    if args.write_cache:
        print(f"wrote {write_cache()}")
        return 0
    if args.published:
        from .published import compare_complexity

        frame = compare_complexity()
        print(_render(frame, args.format))
        mismatches = int((frame["verdict"] == "mismatch").sum())
        if mismatches:
            print(f"error: {mismatches} published figure(s) do not match our counts", file=sys.stderr)
        return 1 if mismatches else 0
    if not args.models or args.dataset is None:
        parser.error("give one or more model names and --dataset (or --published)")
    rows = [asdict(measure(name, args.dataset)) for name in args.models]
    print(_render(pd.DataFrame(rows), args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
