"""Time the training step and inference of shared-basis models: python -m replicate.bench [options].

examples:
  python -m replicate.bench                                   # the default models, CPU, batch 128
  python -m replicate.bench --models ResNet20-S4U1 --rounds 1 --min-time 0.5 --format json
  python -m replicate.bench --device cuda --format md         # on a GPU node: Table 1's networks and
                                                              # ImageNet ResNet34, fp32/bf16, compile on/off
  python -m replicate.bench --basis-convs --models 'ResNet56-S16U1*' --pad 16   # per-layer basis convolutions
  taskset -c 0 python -m replicate.bench --loader              # input pipelines: images/s per core
  python -m replicate.bench --calibrate --device cuda          # measured costs for run --dry-run
  python -m replicate.bench --calibrate --from-results results # ... or those finished runs measured

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

from .. import calibration
from ..config import PRECISION, PRECISIONS
from ..errors import HelpFormatter, Parser, UserError, cli
from ..atomic import atomic_write_json
from .convs import ConvMeasurement, run_conv_benchmark
from .loader import LoaderMeasurement, run_loader_benchmark
from .measure import DEFAULT_IMPLEMENTATIONS, DEFAULT_MODELS, IMPLEMENTATIONS, ratios, run_benchmark
from .throughput import GPU_MODELS, ThroughputMeasurement, run_throughput

COLUMNS = ["model", "dataset", "implementation", "train_step_ms", "ortho_ms", "infer_ms", "peak_mem_mb",
           "train_images_per_s", "infer_images_per_s"]
LOADER_COLUMNS = ["loader", "dataset", "device", "batch", "threads", "cores", "images", "images_per_s",
                  "images_per_s_per_core"]
THROUGHPUT_COLUMNS = ["model", "dataset", "device", "precision", "compiled", "batch", "loader", "step_ms",
                      "train_images_per_s"]
FIGURE_COLUMNS = ["model", "dataset", "device", "precision", "seconds_per_image", "eval_seconds_per_image",
                  "source"]
CONV_COLUMNS = ["model", "input", "layers", "variant", "width", "forward_ms", "weight_grad_ms", "input_grad_ms",
                "total_ms", "per_step_ms"]


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m replicate.bench", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, epilog=__doc__.split("\n", 2)[2], allow_abbrev=False)
    p.add_argument("--models", nargs="+", default=None, metavar="NAME[@DATASET]",
                   help="models to time (default: " + " ".join(DEFAULT_MODELS) + "; with --device cuda or "
                        "--calibrate: Table 1's networks and ResNet34@imagenet)")
    p.add_argument("--implementations", nargs="+", default=None,
                   choices=IMPLEMENTATIONS, metavar="IMPL",
                   help=f"any of {', '.join(IMPLEMENTATIONS)} (default: "
                        f"{' '.join(DEFAULT_IMPLEMENTATIONS)})")
    p.add_argument("--batch", type=int, default=None,
                   help="images per step (default: 128; with --throughput/--calibrate: the recipe's per GPU)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to time")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=6, help="times every configuration is measured, interleaved")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per configuration per round")
    p.add_argument("--basis-convs", action="store_true",
                   help="time each basis convolution of the models (per layer shape) instead of whole steps")
    p.add_argument("--pad", type=int, nargs="+", default=[], metavar="M",
                   help="with --basis-convs: also time each rank rounded up to a multiple of M")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--loader", action="store_true",
                   help="time the input pipelines only (device and workers): training images/s per core, one "
                        "thread (unless --threads); pin it with taskset -c N")
    p.add_argument("--no-loader", action="store_true", help="leave the loader rows out of the default run")
    p.add_argument("--throughput", action="store_true",
                   help="training images/s as the engine trains (device pipeline, channels_last), per network, "
                        "precision and compile mode; the default with --device cuda")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                   help="with --throughput/--calibrate (default: fp32 and bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--compile", nargs="+", choices=("off", "on"), default=None,
                   help="with --throughput: torch.compile off and/or on (default: both on CUDA, off on CPU)")
    p.add_argument("--calibrate", action="store_true",
                   help="measure seconds per training image per network and precision on this device and "
                        "record them in the calibration file, which run --dry-run prices runs with")
    p.add_argument("--from-results", type=Path, metavar="DIR",
                   help="with --calibrate: record what the finished runs under DIR measured instead")
    p.add_argument("--calibration", type=Path, metavar="PATH",
                   help=f"the calibration file (default: ${calibration.CALIBRATION_ENV}, else "
                        f"~/.cache/replicate/calibration.json)")
    p.add_argument("--format", choices=("table", "md", "json"), default="table", help="output format")
    p.add_argument("--output", type=Path, help="also write the rows as JSON to this file (atomically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def render(rows, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([r.to_dict() for r in rows], indent=2)
    if rows and isinstance(rows[0], ConvMeasurement):
        return _render_convs(rows, fmt)
    if rows and isinstance(rows[0], (LoaderMeasurement, ThroughputMeasurement, calibration.Figure)):
        columns = {LoaderMeasurement: LOADER_COLUMNS, ThroughputMeasurement: THROUGHPUT_COLUMNS,
                   calibration.Figure: FIGURE_COLUMNS}[type(rows[0])]
        frame = pd.DataFrame([r.to_dict() for r in rows])[columns]
        frame = frame.round({c: 1 for c in columns if c not in FIGURE_COLUMNS})
        return frame.to_markdown(index=False) if fmt == "md" else frame.to_string(index=False)
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


def _mode(args) -> str:
    """calibrate | loader | throughput | convs | models: what this invocation measures."""
    if args.from_results and not args.calibrate:
        raise UserError("--from-results goes with --calibrate")
    if args.calibrate:
        return "calibrate"
    if args.loader:
        return "loader"
    if args.throughput or (args.device == "cuda" and not args.basis_convs and args.implementations is None):
        return "throughput"
    return "convs" if args.basis_convs else "models"


def _throughput(args, models: list[str]) -> list[ThroughputMeasurement]:
    cuda = args.device == "cuda"
    precisions = args.precisions or (list(PRECISIONS) if cuda else [PRECISION])
    compile_modes = [mode == "on" for mode in (args.compile or (["off", "on"] if cuda else ["off"]))]
    return run_throughput(models, args.device, args.batch, precisions, compile_modes, args.threads,
                          min_time=args.min_time, progress=not args.no_progress)


def _calibrate(args) -> list:
    if args.from_results:
        return _run_figures(args.from_results)
    return _throughput(argparse.Namespace(**{**vars(args), "compile": ["off"]}), args.models or list(GPU_MODELS))


def _figures(rows) -> list[calibration.Figure]:
    if rows and isinstance(rows[0], calibration.Figure):
        return rows
    return [calibration.Figure(r.model, r.dataset, r.device, r.precision, r.seconds_per_image,
                               r.eval_seconds_per_image, r.batch, "bench") for r in rows]


def _run_figures(folder: Path) -> list[calibration.Figure]:
    """What each finished run under ``folder`` measured: GPU-seconds per training image (its epochs' median
    images/s over its processes), and its epochs' remaining wall time (evaluation, checkpoints) per evaluated
    image."""
    import statistics

    from ..config import RunConfig
    from ..plan import image_counts
    from ..atomic import read_jsonl

    figures = []
    for result_file in sorted(Path(folder).glob("*/*/result.json")):
        try:
            result = json.loads(result_file.read_text())
            config = RunConfig.from_dict(result["config"])
            metrics = read_jsonl(result_file.parent / "metrics.jsonl")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a finished run of this suite: nothing measured to take
        execution = result.get("execution") or {}
        rates = [m["images_per_s"] for m in metrics if m.get("images_per_s")]
        if not rates or "device" not in execution:
            continue
        world = execution.get("world_size", 1)
        _, evaluated = image_counts(config)
        rest = [m["wall_s"] - m["epoch_time_s"] for m in metrics if "wall_s" in m and "epoch_time_s" in m]
        figures.append(calibration.Figure(
            config.model.label, config.model.dataset, execution["device"], config.training.precision,
            world / statistics.median(rates),
            world * statistics.median(rest) / evaluated if rest and evaluated else None,
            config.recipe.batch_size, f"run {result_file.parent.name}"))
    if not figures:
        raise UserError(f"--from-results {folder}: no finished run with measured epochs under it "
                        f"(<DIR>/<table>/<run id>/result.json)")
    return figures


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
    if (args.batch is not None and args.batch < 1) or args.rounds < 1 or args.min_time <= 0:
        parser().error("--batch and --rounds must be positive integers, --min-time a positive number")
    if args.pad and (not args.basis_convs or min(args.pad) < 2):
        parser().error("--pad takes multiples of at least 2 and goes with --basis-convs")
    if args.output:
        _check_writable(args.output)
    mode = _mode(args)
    if mode == "calibrate":
        rows = _calibrate(args)
    elif mode == "loader":
        rows = run_loader_benchmark(args.device, args.batch or 128, args.threads or 1, rounds=min(args.rounds, 3),
                                    progress=not args.no_progress)
    elif mode == "throughput":
        rows = _throughput(args, args.models or list(GPU_MODELS))
    elif args.basis_convs:
        rows = run_conv_benchmark(args.models or list(DEFAULT_MODELS), device=args.device, batch=args.batch or 128,
                                  threads=args.threads, rounds=args.rounds, min_time=args.min_time, pad=args.pad,
                                  progress=not args.no_progress)
    else:
        rows = run_benchmark(args.models or list(DEFAULT_MODELS),
                             args.implementations or list(DEFAULT_IMPLEMENTATIONS), device=args.device,
                             batch=args.batch or 128, threads=args.threads, rounds=args.rounds,
                             min_time=args.min_time, memory=not args.no_memory, progress=not args.no_progress)
    print(render(rows, args.format))
    if mode == "models" and args.models is None and args.implementations is None and not args.no_loader:
        # the default run has a loader row per pipeline
        loader_rows = run_loader_benchmark(args.device, args.batch or 128, 1, rounds=min(args.rounds, 3),
                                           progress=not args.no_progress)
        print(("\n" if args.format == "json" else "\ninput pipelines (1 thread)\n") + render(loader_rows, args.format))
        rows = [*rows, *loader_rows]
    if args.output:
        atomic_write_json(args.output, [r.to_dict() for r in rows])
    if mode == "calibrate":
        print(f"recorded {len(rows)} figure(s) in {calibration.record(_figures(rows), args.calibration)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
