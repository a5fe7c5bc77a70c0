"""The ``slurm`` backend: runs submitted as SLURM job arrays through submitit, followed with ``sacct``.

One array per recipe, one task per run (or per pack of ``--pack N`` runs, :mod:`.pack`), requeued on
preemption and timeout; every submission is recorded in the ledger as it is made, so that a relaunch submits
only runs that are neither done nor queued or running, and ``replicate.status`` can tell each run's state from
the results store plus ``sacct``. What SLURM itself offers and says (cluster configs, job parameters, sinfo, sacct,
squeue, the logs) is :mod:`.slurm_cluster`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from ..config import PROFILES
from ..errors import UserError
from ..plan import PlannedRun
from . import ledger, pack
from .base import Backend, RunState, Submission
from .job import LaunchOptions, Outcome, RunJob
from .slurm_cluster import (ACTIVE_STATES, PENDING, RUNNING, ClusterConfig, SlurmError, check_partitions,
                            ensure_reachable, error_tail, job_parameters, job_states, load_cluster_config, pending_reasons,
                            stuck_advice, traceback_tail, with_overrides, world_size)


@dataclass(frozen=True)
class SlurmConfig:
    """The cluster config with the command line's overrides, and how many runs share a job."""

    cluster: ClusterConfig
    pack: int = 1  # runs per job, on one GPU (--pack)
    gpus_given: bool = False  # --gpus was on the command line: its word on GPUs is final

    @classmethod
    def named(cls, name: str, partition: str | None = None, gpus: int | None = None, time_min: int | None = None,
              pack: int = 1) -> "SlurmConfig":
        """A shipped cluster config name or a YAML path, layered over the default, with the overrides."""
        cluster = with_overrides(load_cluster_config(name), partition=partition, gpus=gpus, time_min=time_min)
        return cls(cluster, pack, gpus is not None)


@dataclass(frozen=True)
class JobArray:
    """What one job array is: a recipe's runs, grouped into its tasks (one run each, or a pack), and the
    submitit parameters of every task."""

    recipe: str
    tasks: list[list[PlannedRun]]
    params: dict
    pack: int

    @property
    def runs(self) -> list[PlannedRun]:
        return [run for task in self.tasks for run in task]

    @property
    def threads(self) -> int:
        """CPU threads per run: the task's CPUs (``cpus_per_task``), shared by the runs of a pack."""
        return pack.threads_per_run(self.params["cpus_per_task"], self.pack)


def arrays(config: SlurmConfig, runs: list[PlannedRun]) -> list[JobArray]:
    """One job array per recipe, in name order: what :meth:`SlurmBackend.submit` creates and a dry run shows."""
    grouped = []
    for recipe in sorted({run.config.recipe.name for run in runs}):
        group = [run for run in runs if run.config.recipe.name == recipe]
        params = job_parameters(config.cluster, group[0].config.recipe, runs[0].table)
        tasks = [group[i:i + config.pack] for i in range(0, len(group), config.pack)]
        grouped.append(JobArray(recipe, tasks, params, config.pack))
    return grouped


def pack_size(text: str) -> int:
    """An argparse type: runs per job, a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of runs >= 1")
    return int(text)


class SlurmBackend(Backend):
    name = "slurm"
    help = "a SLURM cluster"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("SLURM (--cluster slurm)")
        group.add_argument("--cluster-config", default="default", metavar="NAME|PATH",
                           help="cluster config: a shipped name (default, local, local-gpu) or a YAML file, "
                                "layered over the default one")
        group.add_argument("--partition", help="override the cluster config's partition")
        group.add_argument("--gpus", type=int, help="override the cluster config's GPUs per node (0: train on CPUs)")
        group.add_argument("--time", type=int, metavar="MINUTES", help="override the wall-clock limit of every job")
        group.add_argument("--pack", type=pack_size, default=1, metavar="N",
                           help="N single-GPU runs per job, side by side on its one GPU, one process each, its "
                                "CPUs shared (cpus_per_task // N threads per run, at least 1); unmeasured on real "
                                "GPUs (docs/performance.md says how to measure it)")

    def configure(self, args: argparse.Namespace) -> SlurmConfig:
        """The cluster config, read and checked here once."""
        return SlurmConfig.named(args.cluster_config, args.partition, args.gpus, args.time, args.pack)

    def check(self, runs: list[PlannedRun], options: LaunchOptions, dry_run: bool) -> None:
        check_cluster_gpus(runs, options.config)
        check_pack(runs, options.config)

    def device_kind(self, options: LaunchOptions) -> str | None:
        """The cluster config's ``gpu_kind`` (none for CPU nodes)."""
        cluster = options.config.cluster
        return cluster.gpu_kind if cluster.gpus_per_node else None

    def world_size(self, options: LaunchOptions, run: PlannedRun) -> int:
        return world_size(job_parameters(options.config.cluster, run.config.recipe, run.table))

    def jobs(self, runs: list[PlannedRun], options: LaunchOptions) -> list[dict]:
        """The job arrays a submission would create, with their resources and how runs share tasks."""
        return [{"recipe": array.recipe, "runs": [run.run_id for run in array.runs], "nodes": array.params["nodes"],
                 "gpus_per_node": array.params.get("gpus_per_node", 0),
                 "tasks_per_node": array.params["tasks_per_node"], "cpus_per_task": array.params["cpus_per_task"],
                 "time_min": array.params["timeout_min"], "partition": array.params.get("slurm_partition"),
                 "pack": array.pack, "threads_per_run": array.threads,
                 "tasks": [[run.run_id for run in task] for task in array.tasks]}
                for array in arrays(options.config, runs)]

    def submit(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
        """Submit every run that is not queued or running as job arrays."""
        config: SlurmConfig = options.config
        ensure_reachable()
        busy = self.in_flight(options.results, runs[0].table)
        todo = [run for run in runs if run.run_id not in busy]
        grouped = arrays(config, todo)
        check_partitions(config.cluster, [array.params for array in grouped])  # refused before submitting
        outcome = {run.run_id: Outcome("queued", "already queued or running") for run in runs if run.run_id in busy}
        if todo:
            folder = Path(options.results).absolute() / ".submitit" / f"{datetime.now():%Y%m%d-%H%M%S-%f}"
            jobs = {}
            for array in grouped:
                jobs |= _submit_array(array, config, options, folder)
            outcome |= {run_id: Outcome("submitted", f"job {job_id}") for run_id, job_id in jobs.items()}
            ids = sorted({job_id.split("_")[0] for job_id in jobs.values()})
            packed = (f", packed up to {config.pack} per job on one GPU with {grouped[0].threads} CPU thread(s) "
                      f"per run" if config.pack > 1 else "")
            print(f"submitted {len(jobs)} run(s) as job array(s) {', '.join(ids)} (cluster config "
                  f"{config.cluster.name}){packed}; logs in {folder}", flush=True)
        return outcome

    def in_flight(self, results: Path, table: str) -> set[str]:
        """Run ids whose latest job, submitted by this backend, is still queued or running."""
        latest = {run_id: r for run_id, r in ledger.latest(results, table).items() if r["backend"] == self.name}
        states = job_states([r["job_id"] for r in latest.values()])
        return {run_id for run_id, r in latest.items() if states.get(r["job_id"], "PENDING") in ACTIVE_STATES}

    def states(self, submitted: list[Submission]) -> dict[str, RunState | None]:
        """From ``sacct`` (and ``squeue``'s reason for a queued job; the log's error for a failed one)."""
        job_ids = [s.record["job_id"] for s in submitted]
        sacct = job_states(job_ids)
        reasons = pending_reasons([job_id for job_id in job_ids if sacct.get(job_id, "PENDING") in PENDING])
        return {s.run.run_id: _state(s, sacct, reasons) for s in submitted}


def _state(submitted: Submission, sacct: dict[str, str], reasons: dict[str, str]) -> RunState | None:
    run, record = submitted.run, submitted.record
    job_id = record["job_id"]
    if submitted.folder_state == "corrupt" and sacct.get(job_id, "") not in ACTIVE_STATES:
        return None  # no job holds it: the folder's state (corrupt) is the run's
    slurm_state = sacct.get(job_id, "PENDING")  # sacct can lag a fresh submission by a second
    if slurm_state in RUNNING:
        return RunState(run, "running", job_id)
    if slurm_state in PENDING:
        reason = reasons.get(job_id, "")
        advice = stuck_advice(job_id, reason) if reason else None
        if advice:
            return RunState(run, "stuck", job_id, advice)
        said = [*(["requeued"] if slurm_state != "PENDING" else []), *([f"SLURM: {reason}"] if reason else [])]
        return RunState(run, "pending", job_id, "; ".join(said))
    reason = "job ended without a result" if slurm_state == "COMPLETED" else slurm_state
    return RunState(run, "failed", job_id, f"{reason}: {_error(record)}")


def _error(record: dict) -> str:
    """The run's error: a packed run's from its own log, else the failing task's (:func:`error_tail`)."""
    if "slot" in record:
        log = pack.log_path(record["folder"], record["job_id"], record["slot"])
        text = log.read_text(errors="replace").splitlines() if log.is_file() else []
        tail = traceback_tail(text, 3)
        if tail:
            return f"{tail} (log: {log})"
    return error_tail(record["folder"], record["job_id"])


# -- checks before anything is submitted ---------------------------------------------------------------------
def check_cluster_gpus(runs: list[PlannedRun], config: SlurmConfig) -> None:
    """A GPU recipe on a cluster config that offers no GPU is refused unless --gpus 0 is explicit."""
    cluster = config.cluster
    if config.gpus_given or cluster.gpus_per_node or not any(PROFILES[r.config.profile].needs_gpu for r in runs):
        return
    name = runs[0].config.profile
    raise UserError(f"the {name} profile trains on GPUs and cluster config {cluster.name!r} offers none "
                    f"(gpus_per_node: 0); set gpus_per_node in it, or pass --gpus 0 to train on the nodes' CPUs "
                    f"anyway")


def check_pack(runs: list[PlannedRun], config: SlurmConfig) -> None:
    """--pack puts single-GPU runs together: a run whose job takes several GPUs, tasks or nodes is refused."""
    if config.pack == 1:
        return
    for array in arrays(config, runs):
        params = array.params
        if params["nodes"] == 1 and params["tasks_per_node"] == 1 and params.get("gpus_per_node", 0) <= 1:
            continue
        raise UserError(f"--pack {config.pack} puts single-GPU runs together, and each run of recipe "
                        f"{array.recipe} ({array.runs[0].row.id}, ...) is a job of {params['nodes']} node(s) x "
                        f"{params['tasks_per_node']} task(s) with {params.get('gpus_per_node', 0)} GPU(s) per "
                        f"node: leave --pack out, or pick single-GPU rows with --rows")


# -- submission ------------------------------------------------------------------------------------------------
def _submit_array(array: JobArray, config: SlurmConfig, options: LaunchOptions, folder: Path) -> dict[str, str]:
    """Submit one array (a task per run, or per pack) and record it in the ledger at once, so that a later
    refusal never hides jobs already queued; run id -> job id."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                     slurm_max_num_timeout=config.cluster.max_requeues)
    executor.update_parameters(**array.params)
    jobs = _submit(executor, [_task_job(task, array, options) for task in array.tasks])
    entries = []
    for task, job in zip(array.tasks, jobs):
        packed = array.pack > 1
        entries += [{"run_id": run.run_id, "row": run.row.id, "seed": run.config.seed, "job_id": job.job_id,
                     "folder": str(job.paths.folder),
                     **({"pack": array.pack, "slot": slot, "threads": array.threads} if packed else {})}
                    for slot, run in enumerate(task)]
    ledger.record(options.results, array.runs[0].table, "slurm", entries)
    return {entry["run_id"]: entry["job_id"] for entry in entries}


def _task_job(task: list[PlannedRun], array: JobArray, options: LaunchOptions):
    """The callable of one array task: the run's job, or the pack of its runs' jobs."""
    if array.pack == 1:
        return RunJob.of(task[0], options)
    return pack.PackedJob([replace(RunJob.of(run, options), threads=array.threads) for run in task])


def _submit(executor, job_objects: list) -> list:
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), executor.batch():  # submitit echoes sbatch's stderr
            jobs = [executor.submit(job) for job in job_objects]
    except Exception as error:
        message = " ".join(str(error).split()) or buffer.getvalue().strip()
        raise SlurmError(f"sbatch refused the jobs: {message}") from None
    return jobs
