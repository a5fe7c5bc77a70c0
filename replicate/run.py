"""Run a paper table: ``python -m replicate.run TABLE [options]``.

Examples::

    python -m replicate.run --list
    python -m replicate.run table2 --dry-run                      # every run, its state and GPU-hours
    python -m replicate.run table1 --profile smoke                 # seconds on a CPU, synthetic data
    python -m replicate.run ablation --profile mini --seeds 2      # real Fashion-MNIST at CPU scale
    python -m replicate.run table1 --cluster slurm --cluster-config local --wait

Finished runs are skipped (``--force`` redoes them); interrupted runs resume from their last checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from . import plan as planning
from . import spec as specs
from .config import PROFILES, PROTOCOLS
from .errors import UserError, cli

CLUSTERS = ("inline", "local", "slurm")


class UsageError(UserError):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replicate.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("table", nargs="?", help="a table name (see --list) or the path of a spec file")
    p.add_argument("--list", action="store_true", help="list the available tables and exit")
    p.add_argument("--cluster", choices=CLUSTERS, default="inline",
                   help="inline: this process; local: submitit subprocesses; slurm: a SLURM cluster")
    p.add_argument("--profile", choices=tuple(PROFILES), default="full",
                   help="; ".join(f"{k}: {v.description}" for k, v in PROFILES.items()))
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="paper: best test epoch, as the authors; clean: a validation split selects the epoch "
                        "(default: the spec's)")
    p.add_argument("--rows", help="comma-separated row ids or glob patterns, e.g. 'resnet56*'")
    p.add_argument("--seeds", type=int, help="seeds per row (default: the spec's)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; run nothing")
    p.add_argument("--force", action="store_true", help="redo runs that are already done")
    p.add_argument("--data-root", type=Path, help="where datasets lie (default: $REPLICATE_DATA or "
                                                  "~/.cache/replicate/data)")
    p.add_argument("--download", action="store_true", help="download missing datasets (CIFAR, Fashion-MNIST)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results store (default: results/)")
    p.add_argument("--gpu-tflops", type=float, default=planning.SUSTAINED_TFLOPS,
                   help="sustained GPU throughput assumed by the cost estimate (TFLOP/s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from .slurm import add_arguments

    add_arguments(p)
    return p


def list_tables() -> str:
    rows = [(name, specs.load(name).title) for name in specs.available()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {title}" for name, title in rows)


def plan_frame(runs: list[planning.PlannedRun], tflops: float) -> pd.DataFrame:
    from .complexity import lookup

    records = []
    for run in runs:
        counts = lookup(run.config.model, run.config.dataset)
        records.append({
            "row": run.row.id, "seed": run.config.seed, "model": run.config.model,
            "data": "synthetic" if run.config.synthetic else run.config.data,
            "params_M": round(counts.params / 1e6, 3), "gmacs": round(counts.macs / 1e9, 3),
            "epochs": run.config.recipe.epochs, "state": run.state,
            "gpu_hours": round(run.gpu_hours(tflops), 2), "run_id": run.run_id})
    return pd.DataFrame(records)


def describe_plan(spec: specs.TableSpec, runs, frame: pd.DataFrame, args) -> str:
    todo = frame[frame.state != "done"] if not args.force else frame
    lines = [f"{spec.name}: {spec.title}",
             f"profile {args.profile}, {len(frame)} runs ({(frame.state == 'done').sum()} done, "
             f"{(frame.state == 'partial').sum()} partial), results in {args.results / spec.name}",
             frame.drop(columns=["run_id"]).to_string(index=False),
             f"estimated GPU-hours: {frame.gpu_hours.sum():.1f} in total, {todo.gpu_hours.sum():.1f} to run "
             f"(basis: epochs x images x max(6 x MACs / {args.gpu_tflops:g} TFLOP/s, "
             f"{planning.MIN_SECONDS_PER_IMAGE * 1e6:.0f} us); a stated model, not a measurement)"]
    skipped = planning.skipped_rows(spec, args.profile)
    if skipped:
        lines.append(f"not in the {args.profile} profile: {', '.join(r.id for r in skipped)}")
    return "\n".join(lines)


def check_writable(results: Path) -> None:
    """Fail before any work when the results folder cannot be written (and leave nothing behind)."""
    target = results.absolute()
    while not target.exists():
        target = target.parent
    try:  # a probe file, not os.access: root passes access checks on read-only and virtual filesystems
        fd, probe = tempfile.mkstemp(dir=target, prefix=".replicate-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise UsageError(f"results folder {results} is not writable; choose another with --results DIR") from None


def check_data(runs: list[planning.PlannedRun], data_root, download: bool) -> None:
    """Open each dataset the plan needs once, so a missing one fails here and not in a job."""
    from .datasets import check_available

    for data in sorted({run.config.data for run in runs if not run.config.synthetic}):
        check_available(data, root=data_root, download=download)


def execute(spec, runs, args) -> int:
    todo = [run for run in runs if args.force or run.state != "done"]
    if not todo:
        print("nothing to run: every run of the plan is done (use --force to redo)")
        return 0
    check_writable(args.results)
    check_data(todo, args.data_root, args.download)
    if args.force:
        from .launch import clear

        for run in todo:
            clear(run)
    if args.cluster == "slurm":
        from .slurm import submit

        return submit(spec, todo, args)
    if args.cluster == "local":
        from .launch import run_local

        folder = Path(tempfile.mkdtemp(prefix="submitit-", dir=_ensure(args.results / ".submitit")))
        outcome = run_local(todo, folder, args.data_root, args.download, progress=not args.no_progress)
    else:
        from .launch import run_inline

        outcome = run_inline(todo, args.data_root, args.download, progress=not args.no_progress)
    failed = {k: v for k, v in outcome.items() if v.startswith("failed")}
    for run_id, reason in outcome.items():
        if reason != "done":
            print(f"{'error' if run_id in failed else 'note'}: run {run_id} {reason}", file=sys.stderr)
    done = sum(v == "done" for v in outcome.values())
    print(f"{done} of {len(outcome)} runs done; results in {args.results / spec.name}")
    return 1 if failed else 0


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@cli
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.list:
            print(list_tables())
            return 0
        if not args.table:
            raise UsageError("name a table (see --list) or a spec file, e.g. python -m replicate.run table1")
        if args.seeds is not None and args.seeds < 1:
            raise UsageError("--seeds must be at least 1")
        spec = specs.load(args.table)
        runs = planning.expand(spec, args.results, args.profile, args.seeds, args.rows, args.protocol)
        frame = plan_frame(runs, args.gpu_tflops)
        print(describe_plan(spec, runs, frame, args))
        if args.dry_run:
            return 0
        return execute(spec, runs, args)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept and the others resume from their last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
