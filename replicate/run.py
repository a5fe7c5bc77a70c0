"""Run a paper table: python -m replicate.run TABLE [options].

examples:
  python -m replicate.run --list
  python -m replicate.run table2 --dry-run                      # every run, its state and GPU-hours
  python -m replicate.run table1 --profile smoke                 # seconds on a CPU, synthetic data
  python -m replicate.run ablation --profile mini --seeds 2      # real Fashion-MNIST at CPU scale
  python -m replicate.run table1 --cluster slurm --cluster-config local --profile smoke --wait

Finished runs are skipped (--force redoes them); interrupted runs resume from their last checkpoint; a run
whose result.json is unreadable is rebuilt from its final checkpoint and metrics.jsonl when they are intact,
else moved aside (<results>/<table>/.aside/) and redone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from . import calibration
from . import plan as planning
from . import spec as specs
from .complexity import lookup
from .config import OVERRIDES, PRECISIONS, PROFILES, PROTOCOLS, Setting, describe_overrides
from .errors import (HelpFormatter, Parser, UserError, check_writable_folder, cli, folder_option,
                     positive_float)
from .backends import BACKENDS, Backend, LaunchOptions, launch
from .results import DEFAULT_RESULTS, check_store


class UsageError(UserError):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m replicate.run", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, epilog=__doc__.split("\n", 2)[2], allow_abbrev=False)
    p.add_argument("table", nargs="?", help="a table name (see --list) or the path of a spec file")
    p.add_argument("--list", action="store_true", help="list the available tables and exit")
    p.add_argument("--cluster", choices=tuple(BACKENDS), default="inline",
                   help="; ".join(f"{name}: {backend.help}" for name, backend in BACKENDS.items()))
    p.add_argument("--profile", choices=tuple(PROFILES), default="full",
                   help="; ".join(f"{k}: {v.description}" for k, v in PROFILES.items()))
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="paper: best test epoch, as the authors; clean: a validation split selects the epoch "
                        "(default: the profile's, else the spec's)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fp32: as the authors; bf16: autocast, a different run (default: the spec's, fp32)")
    p.add_argument("--rows", help="comma-separated row ids or glob patterns, e.g. 'resnet56*'")
    p.add_argument("--seeds", type=int, help="seeds per row (default: the spec's)")
    p.add_argument("--set", type=planning.override_option, action="append", default=[], metavar="KEY=VALUE",
                   dest="overrides",
                   help="override a knob of every run, repeatable: " + "; ".join(
                       f"{key}: {knob.meaning}" for key, knob in OVERRIDES.items())
                   + ". An overridden run is a custom recipe: its own run id and setting, never compared with "
                     "the paper's numbers (a spec row may say the same with set: {epochs: 1})")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; run nothing")
    p.add_argument("--format", choices=("table", "json"), default="table", help="how --dry-run prints the plan")
    p.add_argument("--force", action="store_true", help="redo runs that are already done")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where inline/local runs train; full-profile runs refuse a CPU unless it is named here")
    p.add_argument("--loader", choices=("auto", "device", "workers"), default="auto",
                   help="input pipeline: device (the in-memory split on the training device, augmented per batch) "
                        "or workers (per-sample transforms in loader processes); the same batches either way, "
                        "so not part of the run id; auto: device for CIFAR, Fashion-MNIST and synthetic data, "
                        "workers for ImageNet")
    p.add_argument("--data-root", type=Path, help="where datasets lie (default: $REPLICATE_DATA or "
                                                  "~/.cache/replicate/data)")
    p.add_argument("--download", action="store_true", help="download missing datasets (CIFAR, Fashion-MNIST)")
    p.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="results store")
    p.add_argument("--gpu-tflops", type=positive_float, default=None,
                   help="sustained GPU throughput assumed by the cost estimate where no measured figure exists "
                        "(TFLOP/s; default: " + ", ".join(f"{v:g} for {k}" for k, v in planning.ASSUMED_TFLOPS.items())
                        + " runs); measured figures: python -m replicate.bench --calibrate")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (a per-batch bar shows only when stderr is a terminal)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files in <run>/tensorboard/, beside metrics.jsonl: loss, "
                        "error, lr, R per epoch, gradient statistics per logged batch (tensorboard --logdir "
                        "<results>)")
    p.add_argument("--wait", action="store_true",
                   help="block until every submitted run finishes (a backend that submits jobs returns at once "
                        "otherwise); exit non-zero if any failed")
    p.backend_options = {}  # each backend's own options (in a group of its own), to refuse them elsewhere
    for name, backend in BACKENDS.items():
        known = len(p._actions)
        backend.add_arguments(p)
        p.backend_options[name] = p._actions[known:]
    return p


def check_backend_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An option of a backend other than the chosen one would be ignored (``--pack 2`` without ``--cluster
    slurm`` trains unpacked): refused in one line instead."""
    for name, actions in p.backend_options.items():
        given = [a for a in actions if name != args.cluster and getattr(args, a.dest) != a.default]
        if given:
            option = given[0].option_strings[0]
            raise UsageError(f"{option} is an option of --cluster {name}: add --cluster {name}, or leave "
                             f"{option} out")


def list_tables() -> str:
    rows = [(name, specs.load(name).title) for name in specs.available()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {title}" for name, title in rows)


def read_states(runs: list[planning.PlannedRun]) -> dict[str, str]:
    """Each run's state, read once per invocation: reading one parses its result.json."""
    return {run.run_id: run.state for run in runs}


def plan_frame(runs: list[planning.PlannedRun], tflops: float | None, states: dict[str, str],
               backend: Backend, options: LaunchOptions) -> pd.DataFrame:
    """One line per run: the network it trains (its own size and cost), its state, its GPU-hours and their basis
    (measured on the device the backend trains on, or assumed). The backend is asked for its device only when
    measured figures exist to match it (finding this machine's device imports torch)."""
    records = []
    figures = calibration.load()
    device_kind = backend.device_kind(options) if figures else None
    for run in runs:
        counts = lookup(run.config.model)
        cost = run.cost(figures, device_kind, tflops)
        records.append({
            "row": run.row.id, "seed": run.config.seed, "model": run.config.model.label,
            "data": "synthetic" if run.config.synthetic else run.config.data,
            "params_M": round(counts.params / 1e6, 3), "gmacs": round(counts.macs / 1e9, 3),
            "epochs": run.config.recipe.epochs, "state": states[run.run_id],
            "gpu_hours": round(cost.hours, 2), "basis": cost.basis, "run_id": run.run_id})
    return pd.DataFrame(records)


def describe_plan(spec: specs.TableSpec, runs, frame: pd.DataFrame, args) -> str:
    todo = frame if args.force else frame[frame.state != "done"]
    counts = ", ".join(f"{(frame.state == s).sum()} {s}" for s in ("done", "corrupt", "partial")
                       if (frame.state == s).any())
    lines = [f"{spec.name}: {spec.title}",
             f"profile {args.profile}, protocol {runs[0].config.protocol}, precision "
             f"{runs[0].config.training.precision}{_custom(runs)}: {len(frame)} runs"
             + (f" ({counts})" if counts else "")
             + f", results in {args.results / spec.name}",
             frame.drop(columns=["run_id"]).to_string(index=False),
             f"estimated GPU-hours: {frame.gpu_hours.sum():.1f} in total, {todo.gpu_hours.sum():.1f} to run "
             f"({_basis(frame)})"]
    skipped = planning.skipped_rows(spec, args.profile)
    if skipped:
        lines.append(f"not in the {args.profile} profile: {', '.join(r.id for r in skipped)}")
    return "\n".join(lines)


def _basis(frame: pd.DataFrame) -> str:
    """What the GPU-hours rest on: how many rows were measured (and where), how many assumed (and how)."""
    measured = frame[frame.basis.str.startswith("measured")]
    parts = [f"{n} run(s) {basis}" for basis, n in measured.basis.value_counts().items()]
    if len(measured) < len(frame):
        parts.append(f"{len(frame) - len(measured)} assumed: epochs x images x max(6 x MACs / the TFLOP/s of its "
                     f"row, {planning.MIN_SECONDS_PER_IMAGE * 1e6:.0f} us), a stated model; measure with "
                     f"python -m replicate.bench --calibrate")
    return "; ".join(parts)


def _custom(runs: list[planning.PlannedRun]) -> str:
    """', custom recipe (epochs=1)' when the command line overrides something (rows' own set: differ per row)."""
    custom = sorted({describe_overrides(run.config.overrides) for run in runs if run.config.custom})
    return f", custom recipe ({'; '.join(custom)})" if custom else ""


def plan_json(spec: specs.TableSpec, runs: list[planning.PlannedRun], args, states: dict[str, str],
              options: LaunchOptions) -> dict:
    """Exactly what would run (and, with a backend that submits jobs, be submitted: ``jobs``), as data."""
    backend = BACKENDS[args.cluster]
    frame = plan_frame(runs, args.gpu_tflops, states, backend, options)
    listed = []
    for run, line in zip(runs, frame.to_dict(orient="records")):
        counts = lookup(run.config.model)
        listed.append({"run_id": run.run_id, "row": run.row.id, "seed": run.config.seed,
                       "model": run.config.model.name, "sharing_depth": run.config.model.sharing_depth,
                       "unshared_bn": run.config.model.unshared_bn, "dataset": run.config.model.dataset,
                       "data": line["data"], "params": counts.params, "macs": counts.macs,
                       "epochs": run.config.recipe.epochs, "batch_size": run.config.recipe.batch_size,
                       "state": line["state"], "precision": run.config.training.precision,
                       "protocol": run.config.protocol, "overrides": dict(run.config.overrides),
                       "gpu_hours": line["gpu_hours"], "gpu_hours_basis": line["basis"]})
    plan = {"table": spec.name, "profile": args.profile, "runs": listed}
    jobs = backend.jobs(runs, options)
    if jobs is not None:
        plan["jobs"] = jobs
    return plan


def options(args) -> LaunchOptions:
    """How to launch; the chosen backend's settings (the SLURM cluster config) read and checked here once."""
    return LaunchOptions(results=args.results, data_root=args.data_root, download=args.download,
                         progress=not args.no_progress, tensorboard=args.tensorboard, device=args.device,
                         loader=args.loader, wait=args.wait, config=BACKENDS[args.cluster].configure(args))


# -- checks before anything is written ----------------------------------------------------------------------
def warn_bn_batch(runs: list[planning.PlannedRun], backend: Backend, options: LaunchOptions) -> None:
    """The paper's ImageNet runs split batch 512 over 4 GPUs, so BatchNorm saw 128 images; say when ours won't
    (the backend says how many processes train one run)."""
    seen = set()
    for run in runs:
        recipe = run.config.recipe
        if not PROFILES[run.config.profile].needs_gpu or recipe.name in seen:
            continue
        seen.add(recipe.name)
        world = backend.world_size(options, run)
        if recipe.batch_size // world != recipe.per_gpu_batch:
            print(f"warning: recipe {recipe.name} trains batch {recipe.batch_size} in {world} process(es): BatchNorm "
                  f"sees {recipe.batch_size // world} images per step, the paper's {recipe.per_gpu_batch} "
                  f"({recipe.gpus} GPUs); run it on SLURM with {recipe.gpus} GPUs per job to match", file=sys.stderr)


def check_data(runs: list[planning.PlannedRun], data_root, download: bool) -> None:
    """Open each dataset the plan needs once, so a missing one fails here and not in a job."""
    from .datasets import check_available

    for data in sorted({run.config.data for run in runs if not run.config.synthetic}):
        check_available(data, root=data_root, download=download)


def execute(spec: specs.TableSpec, runs: list[planning.PlannedRun], args, states: dict[str, str],
            launch_options: LaunchOptions) -> int:
    todo = [run for run in runs if args.force or states[run.run_id] != "done"]
    if not todo:
        print(f"nothing to run: every run of the plan is done in {args.results / spec.name} (use --force to "
              f"redo them, or --results DIR for a fresh store)")
        return 0
    check_writable_folder(args.results, "--results")
    check_data(todo, args.data_root, args.download)
    for run in todo:
        if args.force:
            run.folder.remove()
        elif states[run.run_id] == "corrupt":
            epoch = run.folder.rebuildable()
            if epoch:  # the training is all there: resuming after the last epoch writes the result again
                print(f"note: {run.folder.result_file} is unreadable; rebuilding it from its final checkpoint "
                      f"(epoch {epoch}) and metrics.jsonl, without training (the unreadable file is kept as "
                      f"{run.folder.move_result_aside()})", file=sys.stderr)
            else:
                print(f"note: {run.folder.result_file} is unreadable; moved the run to {run.folder.move_aside()} "
                      f"and redoing it", file=sys.stderr)
    outcome = launch(todo, launch_options, args.cluster)
    for run_id, result in outcome.items():
        if result.state not in ("done", "submitted", "queued"):
            label = "error" if result.failed else "note"
            print(f"{label}: run {run_id} {result.state}: {result.detail}", file=sys.stderr)
    return _summary(spec, runs[0].config, outcome, args)


def _summary(spec: specs.TableSpec, config, outcome: dict, args) -> int:
    counts = {state: sum(o.state == state for o in outcome.values()) for state in
              ("done", "submitted", "queued", "busy", "failed")}
    print(", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" of {len(outcome)} runs; "
          f"results in {args.results / spec.name}")
    where = "" if args.results == DEFAULT_RESULTS else f" --results {args.results}"
    if counts["submitted"] and not args.wait:
        selection = (f" --rows '{args.rows}'" if args.rows else "") + (f" --seeds {args.seeds}" if args.seeds else "")
        selection += "".join(f" --set {key}={value:g}" for key, value in args.overrides)
        print(f"follow them with: python -m replicate.status {spec.argument} "
              f"{Setting(args.profile, config.protocol, config.training.precision).options}{selection}{where}")
    elif counts["done"]:
        print(f"next: python -m replicate.tables {spec.argument}{where}")
    return 1 if counts["failed"] else 0


@cli
def main(argv: list[str] | None = None) -> int:
    cli_parser = parser()
    args = cli_parser.parse_args(argv)
    try:
        check_backend_options(cli_parser, args)
        if args.list:
            print(list_tables())
            return 0
        if not args.table:
            raise UsageError("name a table (see --list) or a spec file, e.g. python -m replicate.run table1")
        spec = specs.load(args.table)
        check_store(args.results, [spec.name])
        runs = planning.expand(spec, args.results, args.profile, args.seeds, args.rows, args.protocol,
                               args.precision, dict(args.overrides))
        launch_options = options(args)
        backend = BACKENDS[args.cluster]
        backend.check(runs, launch_options, args.dry_run)
        warn_bn_batch(runs, backend, launch_options)
        states = read_states(runs)
        if args.dry_run and args.format == "json":
            print(json.dumps(plan_json(spec, runs, args, states, launch_options), indent=2))
            return 0
        print(describe_plan(spec, runs, plan_frame(runs, args.gpu_tflops, states, backend, launch_options),
                            args))
        if args.dry_run:
            return 0
        return execute(spec, runs, args, states, launch_options)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept and the others resume from their last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
