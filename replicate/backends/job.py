"""What every backend runs and reports: the job of one run (:class:`RunJob`), its :class:`Outcome`, and how a
launch is configured (:class:`LaunchOptions`).

The job is a picklable submitit ``Checkpointable``: on the signal that precedes a timeout or a preemption
submitit asks it for its resubmission, and the requeued job resumes from the run's last per-epoch checkpoint;
since every epoch is seeded, the resumed run computes exactly what an uninterrupted one would. Every backend
runs this same object, so training, resume and results behave alike everywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from ..config import RunConfig
from ..plan import PlannedRun
from ..results import RunFolder
from ..atomic import Busy


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch, for every backend: data location, output folder, what to show; ``config``: the chosen
    backend's own settings, as its ``configure`` resolved them from the command line (the SLURM cluster config)."""

    results: Path
    data_root: Path | None = None
    download: bool = False
    progress: bool = True
    tensorboard: bool = False  # also write TensorBoard event files beside each run's metrics.jsonl
    device: str = "auto"  # inline/local: auto (CUDA when there is one) | cpu | cuda
    loader: str = "auto"  # input pipeline: auto | device | workers (the same batches; not in the run id)
    wait: bool = False  # a backend that submits: block until every run is done or failed
    config: Any = None  # the backend's settings (Backend.configure)


@dataclass(frozen=True)
class Outcome:
    state: str  # done | busy (trained by another process right now) | failed | submitted | queued
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "failed"


@dataclass
class RunJob(submitit.helpers.Checkpointable):
    """A picklable description of one run; calling it trains (or resumes) the run.

    ``threads``: the CPU threads it trains with when the backend decides (a packed SLURM job shares its CPUs
    between its runs); None: the allocation's (:func:`match_threads_to_allocation`)."""

    config: dict
    run_dir: str
    meta: dict
    data_root: str | None = None
    download: bool = False
    progress: bool = False
    device: str = "auto"
    loader: str = "auto"
    tensorboard: bool = False
    threads: int | None = None

    @classmethod
    def of(cls, run: PlannedRun, options: LaunchOptions, progress: bool = False) -> "RunJob":
        meta = {"table": run.table, "row": run.row.id, "label": run.row.label,
                "published": run.row.published.reference() if run.row.published else None}
        return cls(run.config.to_dict(), str(run.folder.path), meta,
                   str(options.data_root) if options.data_root else None, options.download, progress,
                   options.device, options.loader, options.tensorboard)

    def __call__(self) -> Outcome:
        """Done, or busy: a run another process is training is left to it."""
        from ..train import Environment, Trainer

        _export_distributed_environment()
        match_threads_to_allocation(self.threads)
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


def match_threads_to_allocation(threads: int | None = None) -> None:
    """One rule in every backend: as many threads as CPUs the task was given (``threads`` where the backend
    says, else SLURM's allocation, else an explicit ``OMP_NUM_THREADS``, else every CPU this process may run
    on); recorded with each run, since the thread count changes floating-point sums."""
    import torch

    if threads:
        torch.set_num_threads(threads)
        return
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
