"""Packing: several single-GPU runs in one SLURM job on one GPU (``--pack N``), one process each.

A small CIFAR network at batch 128 keeps a data-centre GPU mostly idle; N of them side by side fill it better.
Each packed run keeps its own run folder and its own logs (``<job id>_pack<slot>.out|.err`` in the job's
folder), trains with ``cpus_per_task // N`` CPU threads (at least 1), and is checkpointed per epoch as ever:
a requeue (timeout, preemption) runs the whole pack again, done runs are skipped and the others resume. A run
that fails fails alone: the others finish, and the job then fails naming it, so that ``status`` shows that run
failed with the error of its own log and the others done.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import submitit

from ..results import RunFolder
from .job import Outcome, RunJob

BUSY = 3  # a packed process's exit status when another process trains its run
_STARTED: list[subprocess.Popen] = []  # this job's packed processes (a module global: the job is pickled)
_CHILD = "import sys; from replicate.backends.pack import run_child; sys.exit(run_child())"


def threads_per_run(cpus_per_task: int, pack: int) -> int:
    """The CPU threads each of ``pack`` runs sharing one task's CPUs trains with."""
    return max(cpus_per_task // pack, 1)


def log_path(folder: str | Path, job_id: str, slot: int, kind: str = "err") -> Path:
    """Where the packed process in ``slot`` of job ``job_id`` writes its output (``out``) or errors (``err``)."""
    return Path(folder) / f"{job_id}_pack{slot}.{kind}"


@dataclass
class PackedJob(submitit.helpers.Checkpointable):
    """A picklable pack of runs; calling it trains them side by side, one process each, and waits for all."""

    jobs: list[RunJob]

    def __call__(self) -> Outcome:
        environment = submitit.JobEnvironment()
        folder, job_id = environment.paths.folder, environment.job_id
        todo = [(slot, job) for slot, job in enumerate(self.jobs) if RunFolder(Path(job.run_dir)).state != "done"]
        try:
            started = [(slot, job, _start(job, log_path(folder, job_id, slot, "out"),
                                          log_path(folder, job_id, slot))) for slot, job in todo]
            while any(process.poll() is None for _, _, process in started):
                time.sleep(1)  # polled, not a blocking wait: the USR2 handler runs at once and may stop them
            failed = [(slot, job) for slot, job, process in started if process.returncode not in (0, BUSY)]
        finally:
            _stop_all()
        if failed:
            names = ", ".join(f"{Path(job.run_dir).name} (log: {log_path(folder, job_id, slot)})"
                              for slot, job in failed)
            raise RuntimeError(f"{len(failed)} of {len(self.jobs)} packed runs failed: {names}")
        return Outcome("done")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Before a timeout or a preemption: stop the runs (their per-epoch checkpoints are the state) and
        resubmit the pack; the requeued job skips the runs already done."""
        _stop_all()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _start(job: RunJob, out: Path, err: Path) -> subprocess.Popen:
    """One packed run as a process of its own, its job handed over as JSON; it ignores the USR2 that SLURM
    sends every process of the job before a timeout (the pack's own process decides, in ``checkpoint``)."""
    with open(out, "ab") as stdout, open(err, "ab") as stderr:
        process = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=stdout,
                                   stderr=stderr, preexec_fn=_ignore_usr2)
    _STARTED.append(process)
    process.stdin.write(json.dumps(asdict(job)).encode())
    process.stdin.close()
    return process


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # an ignored signal stays ignored across exec


def _stop_all(grace_s: float = 30) -> None:
    """End the packed processes still running: SIGTERM, then SIGKILL after ``grace_s``. Only polls (never a
    blocking ``wait``, whose lock the interrupted main loop may hold when this runs in the signal handler)."""
    running = [process for process in _STARTED if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace_s
    while any(process.poll() is None for process in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in running:
        if process.poll() is None:
            process.kill()
    _STARTED.clear()


def run_child() -> int:
    """A packed process: train the run read from stdin; 0 when done, :data:`BUSY` when another process has
    it; an error ends it with its traceback on stderr (its own log)."""
    job = RunJob(**json.load(sys.stdin))
    outcome = job()
    if outcome.state == "busy":
        print(f"busy: {outcome.detail}", file=sys.stderr, flush=True)
        return BUSY
    return 0
