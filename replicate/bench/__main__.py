"""Time the training step and inference of shared-basis models: python -m replicate.bench [options].

examples:
  python -m replicate.bench                                   # the default models, CPU, batch 128
  python -m replicate.bench --models ResNet20-S4U1 --rounds 1 --min-time 0.5 --format json
  python -m replicate.bench --device cuda --format md         # on a GPU node
  python -m replicate.bench --basis-convs --models 'ResNet56-S16U1*' --pad 16   # per-layer basis convolutions

Models are paper names, optionally NAME@DATASET (default dataset: cifar10 for the CIFAR-10 ResNet depths,
cifar100 otherwise). Times are medians over all measurements of all rounds. --basis-convs times each distinct
basis convolution of the models instead (forward and both gradients, at its rank, without its unique channels
and padded to each --pad multiple). docs/performance.md has the measurements and what they mean.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from ..errors import HelpFormatter, UserError, cli
from ..store import atomic_write_json
from .convs import ConvMeasurement, run_conv_benchmark
from .measure import DEFAULT_IMPLEMENTATIONS, DEFAULT_MODELS, IMPLEMENTATIONS, ratios, run_benchmark

COLUMNS = ["model", "dataset", "implementation", "train_step_ms", "ortho_ms", "infer_ms", "peak_mem_mb",
           "train_images_per_s", "infer_images_per_s"]
CONV_COLUMNS = ["model", "input", "layers", "variant", "width", "forward_ms", "weight_grad_ms", "input_grad_ms",
                "total_ms", "per_step_ms"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replicate.bench", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, epilog=__doc__.split("\n", 2)[2], allow_abbrev=False)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME[@DATASET]",
                   help="models to time")
    p.add_argument("--implementations", nargs="+", default=list(DEFAULT_IMPLEMENTATIONS),
                   choices=IMPLEMENTATIONS, metavar="IMPL",
                   help=f"any of {', '.join(IMPLEMENTATIONS)}")
    p.add_argument("--batch", type=int, default=128, help="images per step")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to time")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=6, help="times every configuration is measured, interleaved")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per configuration per round")
    p.add_argument("--basis-convs", action="store_true",
                   help="time each basis convolution of the models (per layer shape) instead of whole steps")
    p.add_argument("--pad", type=int, nargs="+", default=[], metavar="M",
                   help="with --basis-convs: also time each rank rounded up to a multiple of M")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--format", choices=("table", "md", "json"), default="table", help="output format")
    p.add_argument("--output", type=Path, help="also write the rows as JSON to this file (atomically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def render(rows, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([r.to_dict() for r in rows], indent=2)
    if rows and isinstance(rows[0], ConvMeasurement):
        return _render_convs(rows, fmt)
    frame = pd.DataFrame([r.to_dict() for r in rows])[COLUMNS].round(1)
    summary = pd.DataFrame(ratios(rows))
    if fmt == "md":
        text = frame.to_markdown(index=False)
        return text + ("\n\n" + summary.to_markdown(index=False) if len(summary) else "")
    text = frame.to_string(index=False)
    return text + ("\n\nratios (ours / other; ortho share of a step)\n" + summary.to_string(index=False)
                   if len(summary) else "")


def _render_convs(rows: list[ConvMeasurement], fmt: str) -> str:
    frame = pd.DataFrame([r.to_dict() for r in rows])
    per_step = frame.pivot_table(index="model", columns="variant", values="per_step_ms", aggfunc="sum").round(1)
    frame = frame[CONV_COLUMNS].round(2)
    if fmt == "md":
        return frame.to_markdown(index=False) + "\n\n" + per_step.to_markdown()
    return (frame.to_string(index=False) + "\n\nbasis convolutions per training step (ms, forward + both gradients)\n"
            + per_step.to_string())


def _check_writable(path: Path) -> None:
    """Fail before minutes of measuring, not after, if the JSON cannot be written."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output {path}: cannot create {folder} ({error.strerror}); choose another path")
    if path.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"--output {path}: not a writable file path; choose another path")


@cli
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.min_time <= 0:
        parser().error("--batch and --rounds must be positive integers, --min-time a positive number")
    if args.pad and (not args.basis_convs or min(args.pad) < 2):
        parser().error("--pad takes multiples of at least 2 and goes with --basis-convs")
    if args.output:
        _check_writable(args.output)
    if args.basis_convs:
        rows = run_conv_benchmark(args.models, device=args.device, batch=args.batch, threads=args.threads,
                                  rounds=args.rounds, min_time=args.min_time, pad=args.pad,
                                  progress=not args.no_progress)
    else:
        rows = run_benchmark(args.models, args.implementations, device=args.device, batch=args.batch,
                             threads=args.threads, rounds=args.rounds, min_time=args.min_time,
                             memory=not args.no_memory, progress=not args.no_progress)
    print(render(rows, args.format))
    if args.output:
        atomic_write_json(args.output, [r.to_dict() for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
