"""Executing planned runs: one interface, ``launch(runs, options)``, and the backends registered in ``BACKENDS``.

Every backend runs the same job object, :class:`RunJob`: ``inline`` calls it in this process, ``local`` as
submitit subprocesses (one per GPU at a time, or one at a time on a CPU), ``slurm`` as job arrays. The job is
a submitit ``Checkpointable``: on the signal that precedes a timeout or a preemption submitit asks it for its
resubmission, and the requeued job resumes from the run's last per-epoch checkpoint; since every epoch is
seeded, the resumed run computes exactly what an uninterrupted one would. A new backend is one function
``(runs, options) -> {run_id: Outcome}`` added to ``BACKENDS``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import submitit
from tqdm import tqdm

from . import slurm, status
from .config import RunConfig
from .plan import PlannedRun
from .results import RunFolder
from .store import Busy


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch: data location, output folder and, for SLURM, the cluster profile and its overrides."""

    results: Path
    data_root: Path | None = None
    download: bool = False
    progress: bool = True
    tensorboard: bool = False  # also write TensorBoard event files beside each run's metrics.jsonl
    device: str = "auto"  # inline/local: auto (CUDA when there is one) | cpu | cuda
    loader: str = "auto"  # input pipeline: auto | device | workers (the same batches; not in the run id)
    cluster_config: str = "default"  # slurm: a profile name or YAML path, layered over the default profile
    partition: str | None = None
    gpus: int | None = None
    time_min: int | None = None
    wait: bool = False  # slurm: block until every run is done or failed
    cluster: slurm.ClusterProfile | None = None  # slurm: the profile already resolved (else read from the above)


@dataclass(frozen=True)
class Outcome:
    state: str  # done | busy (trained by another process right now) | failed | submitted | queued
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "failed"


@dataclass
class RunJob(submitit.helpers.Checkpointable):
    """A picklable description of one run; calling it trains (or resumes) the run."""

    config: dict
    run_dir: str
    meta: dict
    data_root: str | None = None
    download: bool = False
    progress: bool = False
    device: str = "auto"
    loader: str = "auto"
    tensorboard: bool = False

    @classmethod
    def of(cls, run: PlannedRun, options: LaunchOptions, progress: bool = False) -> "RunJob":
        meta = {"table": run.table, "row": run.row.id, "label": run.row.label,
                "published": run.row.published.reference() if run.row.published else None}
        return cls(run.config.to_dict(), str(run.folder.path), meta,
                   str(options.data_root) if options.data_root else None, options.download, progress,
                   options.device, options.loader, options.tensorboard)

    def __call__(self) -> Outcome:
        """Done, or busy: a run another process is training is left to it."""
        from .train import Environment, Trainer

        _export_distributed_environment()
        match_threads_to_allocation()
        trainer = Trainer(RunConfig.from_dict(self.config), RunFolder(Path(self.run_dir)), data_root=self.data_root,
                          download=self.download, progress=self.progress, meta=self.meta,
                          tensorboard=self.tensorboard,
                          log=lambda line: print(line, flush=True), env=Environment.detect(self.device, self.loader))
        try:
            trainer.run()
        except Busy as busy:
            if trainer.env.world_size > 1:  # the other ranks would wait for this one: end the whole job
                raise
            return Outcome("busy", str(busy))
        return Outcome("done")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # The per-epoch checkpoint on disk is the state: the requeued job resumes from it.
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def match_threads_to_allocation() -> None:
    """One rule in every backend: as many threads as CPUs the task was given (SLURM's allocation, else an
    explicit ``OMP_NUM_THREADS``, else every CPU this process may run on); recorded with each run, since the
    thread count changes floating-point sums."""
    import torch

    for variable in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 0:
            torch.set_num_threads(int(value))
            return
    torch.set_num_threads(len(os.sched_getaffinity(0)))


def _export_distributed_environment() -> None:
    """In a multi-task SLURM job, set RANK/WORLD_SIZE/MASTER_ADDR... for DistributedDataParallel."""
    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job
        return
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


# -- the backends ----------------------------------------------------------------------------------------------
def run_inline(runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
    """Train runs one after the other in this process."""
    outcome = {}
    bar = tqdm(runs, desc="runs", unit="run", disable=None if options.progress else True, file=sys.stderr)
    for run in bar:
        bar.set_postfix_str(f"{run.row.id} seed {run.config.seed}")
        job = RunJob.of(run, options, progress=options.progress and sys.stderr.isatty())
        outcome[run.run_id] = job()
    return outcome


def run_local(runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
    """Each run a local subprocess through submitit: one per GPU at a time (one on a CPU), the next started
    as soon as any finishes."""
    import torch

    slots = max(torch.cuda.device_count(), 1) if options.device != "cpu" else 1
    root = Path(options.results) / ".submitit"
    root.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=tempfile.mkdtemp(prefix="local-", dir=root), cluster="local")
    executor.update_parameters(timeout_min=60 * 24 * 7, gpus_per_node=min(torch.cuda.device_count(), 1),
                               name="replicate")
    outcome: dict[str, Outcome] = {}
    pending, active, shown = list(runs), [], {}
    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=None if options.progress else True,
               file=sys.stderr)  # a bar on a terminal; elsewhere one line per epoch
    while pending or active:
        while pending and len(active) < slots:
            run = pending.pop(0)
            with _stderr_to(root / "controllers.log"):
                active.append((run, executor.submit(RunJob.of(run, options))))
        for run, _ in active:
            _show_epochs(run, shown, bar, options.progress)
        finished = [(run, job) for run, job in active if job.done()]
        if not finished:
            time.sleep(0.5)
            continue
        for run, job in finished:
            active.remove((run, job))
            _show_epochs(run, shown, bar, options.progress)
            outcome[run.run_id] = _job_outcome(job)
            bar.update(1)
    bar.close()
    return outcome


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Start submitit's local controller with its stderr in a log file, not ours: on Ctrl-C the whole process
    group is interrupted, and the controller's own KeyboardInterrupt traceback would follow our clean line.
    (The jobs' output goes to their own logs either way.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _show_epochs(run: PlannedRun, shown: dict[str, int], bar: tqdm, progress: bool) -> None:
    """A subprocess's epochs, read from its metrics log: on the bar (a terminal) or one line each."""
    if not progress:  # the log is not even read
        return
    records = run.folder.records("metrics")
    if not records or records[-1]["epoch"] <= shown.get(run.run_id, 0):
        return
    last = records[-1]
    text = (f"{run.row.id} seed {run.config.seed}: epoch {last['epoch']}/{run.config.recipe.epochs}, "
            f"loss {last['train_loss']:.3f}, {last['eval_split']} error {last['eval_top1_err']:.2f}%")
    if bar.disable:
        print(text, file=sys.stderr, flush=True)
    else:
        bar.set_postfix_str(text)
    shown[run.run_id] = last["epoch"]


def _job_outcome(job: submitit.Job) -> Outcome:
    try:
        return job.result()
    except Exception as error:  # the job's own traceback is in its log; report the last line
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        return Outcome("failed", f"{lines[-1] if lines else type(error).__name__} (log: {job.paths.stderr})")


def run_slurm(runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
    """Submit every run that is not queued or running as SLURM job arrays; with ``wait``, follow them."""
    profile = cluster_profile(options)
    slurm.ensure_reachable()
    table = runs[0].table
    busy = slurm.active_runs(options.results, table)
    todo = [run for run in runs if run.run_id not in busy]
    slurm.check_partitions(profile, todo)  # what can never start is refused before anything is submitted
    outcome = {run.run_id: Outcome("queued", "already queued or running") for run in runs if run.run_id in busy}
    if todo:
        folder = Path(options.results).absolute() / ".submitit" / f"{datetime.now():%Y%m%d-%H%M%S-%f}"
        jobs = slurm.submit(profile, todo, [RunJob.of(run, options) for run in todo], options.results, folder)
        outcome |= {run_id: Outcome("submitted", f"job {job_id}") for run_id, job_id in jobs.items()}
        arrays = sorted({job_id.split("_")[0] for job_id in jobs.values()})
        print(f"submitted {len(jobs)} run(s) as job array(s) {', '.join(arrays)} (cluster profile {profile.name}); "
              f"logs in {folder}", flush=True)
    if options.wait:
        for state in status.wait(runs, options.results, table, progress=options.progress):
            failed = state.state in ("failed", "not submitted")
            outcome[state.run.run_id] = Outcome("failed" if failed else state.state, state.detail)
    return outcome


def cluster_profile(options: LaunchOptions) -> slurm.ClusterProfile:
    """The SLURM profile a launch uses: the one resolved already, else the named profile, layered over the
    default, with the overrides (two YAML files read and checked)."""
    if options.cluster is not None:
        return options.cluster
    return slurm.with_overrides(slurm.load_profile(options.cluster_config), partition=options.partition,
                                gpus=options.gpus, time_min=options.time_min)


Backend = Callable[[list[PlannedRun], LaunchOptions], dict[str, Outcome]]
BACKENDS: dict[str, Backend] = {"inline": run_inline, "local": run_local, "slurm": run_slurm}


def launch(runs: list[PlannedRun], options: LaunchOptions, backend: str = "inline") -> dict[str, Outcome]:
    """Run (or submit) ``runs`` with a backend of :data:`BACKENDS`; returns each run id's outcome."""
    return BACKENDS[backend](runs, options) if runs else {}
