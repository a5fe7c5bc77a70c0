"""The ``local`` backend: each run a subprocess of this machine through submitit (the same job object as on
SLURM): one per GPU at a time, or one at a time on a CPU, the next started as soon as any finishes."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import submitit
from tqdm import tqdm

from ..plan import PlannedRun
from .inline import InlineBackend
from .job import LaunchOptions, Outcome, RunJob


class LocalBackend(InlineBackend):
    name = "local"
    help = "submitit subprocesses"

    def submit(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
        return run_local(runs, options)


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
