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
from dataclasses import replace
from pathlib import Path

import pandas as pd

from . import calibration
from . import plan as planning
from . import spec as specs
from .complexity import lookup
from .config import OVERRIDES, PRECISIONS, PROFILES, PROTOCOLS, Setting, describe_overrides
from .errors import HelpFormatter, UserError, check_writable_folder, cli, folder_option, positive_float
from .launch import BACKENDS, LaunchOptions, cluster_profile, launch
from .results import DEFAULT_RESULTS, check_store
from .slurm import ClusterProfile, arrays, job_parameters, world_size

CPU_TFLOPS = 0.1  # sustained training throughput of a 2-core CPU (ResNet56, batch 128: about 1 s a step)


class UsageError(UserError):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replicate.run", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, epilog=__doc__.split("\n", 2)[2], allow_abbrev=False)
    p.add_argument("table", nargs="?", help="a table name (see --list) or the path of a spec file")
    p.add_argument("--list", action="store_true", help="list the available tables and exit")
    p.add_argument("--cluster", choices=tuple(BACKENDS), default="inline",
                   help="inline: this process; local: submitit subprocesses; slurm: a SLURM cluster")
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
    group = p.add_argument_group("SLURM (--cluster slurm)")
    group.add_argument("--cluster-config", default="default", metavar="NAME|PATH",
                       help="cluster profile: a shipped name (default, local, local-gpu) or a YAML file, "
                            "layered over the default profile")
    group.add_argument("--partition", help="override the profile's partition")
    group.add_argument("--gpus", type=int, help="override the profile's GPUs per node (0: train on CPUs)")
    group.add_argument("--time", type=int, metavar="MINUTES", help="override the wall-clock limit of every job")
    group.add_argument("--wait", action="store_true",
                       help="block until every submitted run finishes; exit non-zero if any failed")
    return p


def list_tables() -> str:
    rows = [(name, specs.load(name).title) for name in specs.available()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {title}" for name, title in rows)


def read_states(runs: list[planning.PlannedRun]) -> dict[str, str]:
    """Each run's state, read once per invocation: reading one parses its result.json."""
    return {run.run_id: run.state for run in runs}


def plan_frame(runs: list[planning.PlannedRun], tflops: float | None, states: dict[str, str],
               device_kind: str | None = None) -> pd.DataFrame:
    """One line per run: the network it trains (its own size and cost), its state, its GPU-hours and their basis
    (measured on ``device_kind``, or assumed)."""
    records = []
    figures = calibration.load() if device_kind else []
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


def estimate_device(args, cluster: ClusterProfile | None) -> str | None:
    """The device kind the runs will train on, whose measured figures price them: the cluster profile's
    ``gpu_kind`` on SLURM (none for CPU nodes); else this machine's device (CUDA unless --device cpu)."""
    if args.cluster == "slurm":
        return cluster.gpu_kind if cluster is not None and cluster.gpus_per_node else None
    if not calibration.load():  # no measured figure to match: a plan needs no device (and no torch import)
        return None
    import torch

    from .results import device_name

    cuda = args.device != "cpu" and torch.cuda.is_available()
    return device_name(torch.device("cuda" if cuda else "cpu"))


def _custom(runs: list[planning.PlannedRun]) -> str:
    """', custom recipe (epochs=1)' when the command line overrides something (rows' own set: differ per row)."""
    custom = sorted({describe_overrides(run.config.overrides) for run in runs if run.config.custom})
    return f", custom recipe ({'; '.join(custom)})" if custom else ""


def plan_json(spec: specs.TableSpec, runs: list[planning.PlannedRun], args, states: dict[str, str],
              cluster: ClusterProfile | None) -> dict:
    """Exactly what would run (and, with --cluster slurm, be submitted), as data."""
    frame = plan_frame(runs, args.gpu_tflops, states, estimate_device(args, cluster))
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
    if args.cluster == "slurm":
        plan["jobs"] = slurm_jobs(runs, cluster)
    return plan


def slurm_jobs(runs: list[planning.PlannedRun], profile: ClusterProfile) -> list[dict]:
    """The job arrays a submission would create (the same grouping as ``slurm.submit``), with their resources."""
    return [{"recipe": recipe, "runs": [run.run_id for run in group], "nodes": params["nodes"],
             "gpus_per_node": params.get("gpus_per_node", 0), "tasks_per_node": params["tasks_per_node"],
             "cpus_per_task": params["cpus_per_task"], "time_min": params["timeout_min"],
             "partition": params.get("slurm_partition")} for recipe, group, params in arrays(profile, runs)]


def options(args) -> LaunchOptions:
    """How to launch; with --cluster slurm, the cluster profile too, read and checked here once."""
    given = LaunchOptions(results=args.results, data_root=args.data_root, download=args.download,
                          progress=not args.no_progress, tensorboard=args.tensorboard, device=args.device,
                          cluster_config=args.cluster_config,
                          partition=args.partition, gpus=args.gpus, time_min=args.time, wait=args.wait,
                          loader=args.loader)
    return replace(given, cluster=cluster_profile(given)) if args.cluster == "slurm" else given


# -- checks before anything is written ----------------------------------------------------------------------
def check_device(runs: list[planning.PlannedRun], args) -> None:
    """A full-profile run trains on a GPU: on a machine without one, refuse unless --device cpu says so."""
    import torch

    if args.cluster == "slurm" or args.device == "cpu":
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: this machine has no CUDA device; use --device cpu or another machine")
    if torch.cuda.is_available() or not any(PROFILES[r.config.profile].needs_gpu for r in runs):
        return
    hours = sum(run.gpu_hours(CPU_TFLOPS) for run in runs)
    raise UsageError(f"the {args.profile} profile trains on a GPU and this machine has none (device: cpu, "
                     f"{torch.get_num_threads()} threads): {len(runs)} run(s) would take about {hours:,.0f} "
                     f"CPU-hours here; add --device cpu to train on the CPU anyway, or use --profile smoke or mini")


def check_cluster_gpus(runs: list[planning.PlannedRun], args, profile: ClusterProfile | None) -> None:
    """A GPU recipe on a cluster profile that offers no GPU is refused unless --gpus 0 is explicit."""
    if args.cluster != "slurm" or args.gpus is not None:
        return
    if profile.gpus_per_node == 0 and any(PROFILES[r.config.profile].needs_gpu for r in runs):
        raise UsageError(f"the {args.profile} profile trains on GPUs and cluster profile {profile.name!r} offers "
                         f"none (gpus_per_node: 0); set gpus_per_node in it, or pass --gpus 0 to train on the "
                         f"nodes' CPUs anyway")


def warn_bn_batch(runs: list[planning.PlannedRun], profile: ClusterProfile | None) -> None:
    """The paper's ImageNet runs split batch 512 over 4 GPUs, so BatchNorm saw 128 images; say when ours won't.

    ``profile``: the cluster profile with --cluster slurm, else None (one process per run)."""
    seen = set()
    for run in runs:
        recipe = run.config.recipe
        if not PROFILES[run.config.profile].needs_gpu or recipe.name in seen:
            continue
        seen.add(recipe.name)
        world = world_size(job_parameters(profile, recipe, run.table)) if profile is not None else 1
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
    args = parser().parse_args(argv)
    try:
        if args.list:
            print(list_tables())
            return 0
        if not args.table:
            raise UsageError("name a table (see --list) or a spec file, e.g. python -m replicate.run table1")
        spec = specs.load(args.table)
        check_store(args.results, [spec.name])
        runs = planning.expand(spec, args.results, args.profile, args.seeds, args.rows, args.protocol,
                               args.precision, dict(args.overrides))
        if not args.dry_run:
            check_device(runs, args)
        launch_options = options(args)
        check_cluster_gpus(runs, args, launch_options.cluster)
        warn_bn_batch(runs, launch_options.cluster)
        states = read_states(runs)
        if args.dry_run and args.format == "json":
            print(json.dumps(plan_json(spec, runs, args, states, launch_options.cluster), indent=2))
            return 0
        print(describe_plan(spec, runs, plan_frame(runs, args.gpu_tflops, states,
                                                   estimate_device(args, launch_options.cluster)), args))
        if args.dry_run:
            return 0
        return execute(spec, runs, args, states, launch_options)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept and the others resume from their last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
