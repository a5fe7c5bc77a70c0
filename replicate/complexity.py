"""Parameter and multiply-accumulate counts of the zoo (fvcore), and the check against published figures.

Conventions (SPEC §3.7): ``params`` counts every trainable tensor once (a shared basis once, BN included);
``macs`` is fvcore's total for one image in eval mode (conv, linear, batch-norm, pooling), ``conv_linear_macs``
only convolutions and linear layers, and ``flops = 2 * macs``. A shared basis is counted at every call, as
fvcore traces the executed graph (ptflops >= 0.7 and thop count it per registration and inflate the figure).

CLI::

    python -m replicate.complexity ResNet56-S16U1* ResNet56 --dataset cifar10 [--format table|csv|json|md]
    python -m replicate.complexity --published [--format ...]   # exit 1 on any mismatch
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

import pandas as pd
import torch
from torch import nn

from .models import ModelError, create
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


def count_params(model: nn.Module) -> int:
    """Trainable parameters, each tensor once (``parameters()`` already de-duplicates shared tensors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(fvcore total, conv+linear only) multiply-accumulates for one image, model in eval mode."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, input_size, input_size))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        with warnings.catch_warnings():  # torch.jit deprecation notices raised inside fvcore's tracer
            warnings.simplefilter("ignore")
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
    return Complexity(model.config.name, dataset, count_params(model), macs, conv_linear, 2 * macs)


def _render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(frame.to_dict(orient="records"), indent=2)
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "md":
        return frame.to_markdown(index=False)
    return frame.to_string(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.complexity", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", metavar="NAME", help="zoo names, e.g. ResNet56-S16U1*")
    parser.add_argument("--dataset", choices=("cifar10", "cifar100", "imagenet"), default=None)
    parser.add_argument("--published", action="store_true",
                        help="compare every published Params/FLOPs figure with our counts")
    parser.add_argument("--format", choices=("table", "csv", "json", "md"), default="table")
    args = parser.parse_args(argv)
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
    try:
        rows = [asdict(measure(name, args.dataset)) for name in args.models]
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_render(pd.DataFrame(rows), args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
