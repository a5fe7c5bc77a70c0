"""Executing planned runs: in this process (``inline``) or as submitit jobs (``local``; ``slurm`` in its module).

The same job object runs everywhere. It is a submitit ``Checkpointable``: on the signal that precedes a
timeout or a preemption submitit asks it for its resubmission, and the requeued job resumes from the run's
last per-epoch checkpoint; since every epoch is seeded, the resumed run computes exactly what an
uninterrupted one would.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import submitit
from tqdm import tqdm

from .config import RunConfig
from .plan import PlannedRun
from .store import Busy


@dataclass
class RunJob(submitit.helpers.Checkpointable):
    """A picklable description of one run; calling it trains (or resumes) the run."""

    config: dict
    run_dir: str
    meta: dict
    data_root: str | None = None
    download: bool = False
    progress: bool = False

    @classmethod
    def of(cls, run: PlannedRun, data_root=None, download: bool = False, progress: bool = False) -> "RunJob":
        meta = {"table": run.table, "row": run.row.id, "label": run.row.label,
                "published": published_reference(run.row.published)}
        return cls(run.config.to_dict(), str(run.directory), meta, str(data_root) if data_root else None,
                   download, progress)

    def __call__(self) -> dict:
        from .train import Trainer

        _export_distributed_environment()
        _match_threads_to_allocation()
        trainer = Trainer(RunConfig.from_dict(self.config), Path(self.run_dir), data_root=self.data_root,
                          download=self.download, progress=self.progress, meta=self.meta,
                          log=lambda line: print(line, flush=True))
        result = trainer.run()
        return {"run_id": result["run_id"], "selected": result["selected"]}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # The per-epoch checkpoint on disk is the state: the requeued job resumes from it.
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _match_threads_to_allocation() -> None:
    """Use as many CPU threads as SLURM gave the task: oversubscribed cores run many times slower."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


def _export_distributed_environment() -> None:
    """In a multi-task SLURM job, set RANK/WORLD_SIZE/MASTER_ADDR... for DistributedDataParallel."""
    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job
        return
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def published_reference(entry) -> dict | None:
    """What the paper printed for this row, stored with the result for the analysis layer."""
    if entry is None:
        return None
    return {"source": entry.source, "label": entry.label, "top1_err": entry.top1_err,
            "top5_err": entry.top5_err, "flagged": bool(entry.flag)}


def clear(run: PlannedRun) -> None:
    """Forget a run's results and checkpoints (``--force``)."""
    if run.directory.exists():
        shutil.rmtree(run.directory)


def run_inline(runs: list[PlannedRun], data_root=None, download: bool = False,
               progress: bool = True) -> dict[str, str]:
    """Train runs one after the other in this process; returns run id -> 'done' or the error line."""
    from .train import Trainer

    outcome = {}
    bar = tqdm(runs, desc="runs", unit="run", disable=not progress, file=sys.stderr)
    for run in bar:
        bar.set_postfix_str(f"{run.row.id} seed {run.config.seed}")
        trainer = Trainer(run.config, run.directory, data_root=data_root, download=download,
                          progress=progress, meta=RunJob.of(run).meta,
                          log=lambda line: tqdm.write(f"[{run.row.id} s{run.config.seed}] {line}"))
        try:
            trainer.run()
            outcome[run.run_id] = "done"
        except Busy as busy:
            outcome[run.run_id] = f"skipped: {busy}"
    return outcome


def local_executor(folder: Path, gpus: int) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=60 * 24 * 7, gpus_per_node=min(gpus, 1), name="replicate")
    return executor


def run_local(runs: list[PlannedRun], folder: Path, data_root=None, download: bool = False,
              progress: bool = True) -> dict[str, str]:
    """Run each run as a local subprocess through submitit: one per GPU at a time, or one at a time on CPU."""
    import torch

    slots = max(torch.cuda.device_count(), 1)
    executor = local_executor(folder, torch.cuda.device_count())
    outcome: dict[str, str] = {}
    pending = list(runs)
    active: list[tuple[PlannedRun, submitit.Job]] = []
    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress, file=sys.stderr)
    while pending or active:
        while pending and len(active) < slots:
            run = pending.pop(0)
            active.append((run, executor.submit(RunJob.of(run, data_root, download))))
        run, job = active.pop(0)
        try:
            job.result()
            outcome[run.run_id] = "done"
        except Exception as error:  # the job's own traceback is in its log; report the last line
            outcome[run.run_id] = f"failed: {_last_line(error)} (log: {job.paths.stderr})"
        bar.update(1)
    bar.close()
    return outcome


def _last_line(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
