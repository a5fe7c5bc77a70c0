"""The one interface of an execution backend (:class:`Backend`), and what is the same for every backend: the
states a submitted run can be in, how a run's folder and its backend's word make its state, and the wait loop.

A backend adds its options to ``replicate.run``'s command line, resolves its settings from them, refuses what
can never run, says what it would submit (``--dry-run``), runs or submits the runs, and, when it submits, says
where each of its runs stands and waits for them. ``replicate.run`` and ``replicate.status`` only ever talk to
this interface (the registry is ``replicate.backends.BACKENDS``), so a new backend is one module and one
registry line.
"""
from __future__ import annotations

import argparse
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..plan import PlannedRun
from . import ledger
from .job import LaunchOptions, Outcome

# "pending" is SLURM's word for a queued job; a folder that holds nothing yet is "not started" (results.py), and
# a run neither done nor submitted is "not submitted" here.
STATES = ("done", "corrupt", "running", "pending", "stuck", "failed", "not submitted")
IN_FLIGHT = ("running", "pending", "stuck")  # a job in one of these still holds its run
SETTLED = ("done",)  # a result, once written, is final: such a run is not polled again while waiting
ENDED = ("done", "failed", "not submitted", "corrupt")  # nothing more will happen to the run by waiting


@dataclass(frozen=True)
class RunState:
    run: PlannedRun
    state: str  # one of STATES
    job_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Submission:
    """A run a backend submitted and that is not done: its latest ledger record and its folder's state
    (``partial``, ``corrupt`` or ``missing``), read once by the caller."""

    run: PlannedRun
    record: dict
    folder_state: str


class Backend(ABC):
    """An execution backend. Only :meth:`submit` is required: a backend that runs its runs to completion
    within the command (inline, local) keeps the defaults of the rest."""

    name: str = ""  # its --cluster name, as registered
    help: str = ""  # what it is, in a few words, for --cluster's help

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add its own options to ``replicate.run`` (an argument group); none by default."""

    def configure(self, args: argparse.Namespace) -> Any:
        """Its settings, resolved from the parsed command line and checked once (None: it has none); they
        reach every other method as ``options.config``."""
        return None

    def check(self, runs: list[PlannedRun], options: LaunchOptions, dry_run: bool) -> None:
        """Refuse, in one line (a ``UserError``), what can never run where it would run, before anything is
        written (a dry run included, unless the check is about actually training)."""

    def device_kind(self, options: LaunchOptions) -> str | None:
        """The device the runs will train on, whose measured figures price them in ``--dry-run``; None: the
        cost is assumed."""
        return None

    def world_size(self, options: LaunchOptions, run: PlannedRun) -> int:
        """Processes that train one run together (BatchNorm sees the batch divided by it)."""
        return 1

    def jobs(self, runs: list[PlannedRun], options: LaunchOptions) -> list[dict] | None:
        """What it would submit, as data (the ``jobs`` of ``--dry-run --format json``); None: nothing is
        submitted, the runs train in the command itself."""
        return None

    @abstractmethod
    def submit(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
        """Run, or submit, every run; each run id's outcome (done, busy, failed, submitted, queued). A backend
        that submits records each submission in the ledger (:func:`ledger.record`) under its name."""

    def states(self, submitted: list[Submission]) -> dict[str, RunState | None]:
        """Where each run it submitted stands now: running, pending, stuck or failed (with the error); None for
        a run none of its jobs holds any more (the run's folder then says corrupt or not submitted)."""
        return {s.run.run_id: None for s in submitted}

    def wait(self, runs: list[PlannedRun], options: LaunchOptions) -> dict[str, Outcome]:
        """Block until every run it submitted is done or failed; each run's final outcome."""
        final = follow(runs, lambda some: run_states(some, options.results, runs[0].table, {self.name: self}),
                       progress=options.progress)
        return outcomes(final)


def run_states(runs: list[PlannedRun], results: Path, table: str,
               backends: Mapping[str, Backend]) -> list[RunState]:
    """Each run's state: its folder's (done, corrupt, not submitted), else what the backend that submitted it
    says (the latest ledger record names it)."""
    records = ledger.latest(results, table)
    folder_states = {run.run_id: run.state for run in runs}
    asked: dict[str, list[Submission]] = {}
    for run in runs:
        record = records.get(run.run_id)
        if record is not None and folder_states[run.run_id] != "done":
            asked.setdefault(record["backend"], []).append(Submission(run, record, folder_states[run.run_id]))
    said: dict[str, RunState | None] = {}
    for name, submitted in asked.items():
        if name in backends:
            said |= backends[name].states(submitted)
        else:  # a ledger written by a version with another backend
            said |= {s.run.run_id: RunState(s.run, "failed", s.record.get("job_id", ""),
                                            f"submitted by backend {name!r}, which this version does not know")
                     for s in submitted}
    return [_state(run, folder_states[run.run_id], records.get(run.run_id), said.get(run.run_id))
            for run in runs]


def _state(run: PlannedRun, folder_state: str, record: dict | None, job: RunState | None) -> RunState:
    if folder_state == "done":
        return RunState(run, "done", record["job_id"] if record else "")
    if job is not None and (folder_state != "corrupt" or job.state in IN_FLIGHT):
        return job
    if folder_state == "corrupt":
        return RunState(run, "corrupt", detail=f"{run.folder.result_file} is unreadable: a relaunch "
                                               f"{run.folder.recovery()}")
    detail = "a checkpoint exists: it resumes when launched" if folder_state == "partial" else ""
    return RunState(run, "not submitted", detail=detail)


def follow(runs: list[PlannedRun], poll: Callable[[list[PlannedRun]], list[RunState]], progress: bool = True,
           poll_s: float = 5.0) -> list[RunState]:
    """Block until every run is done, failed or not submitted (a progress bar meanwhile); the final states.

    A done run is not polled again (its result.json is not re-read); a failed one is, since a cluster may
    still requeue a preempted job."""
    from tqdm import tqdm

    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress, file=sys.stderr)
    states: list[RunState | None] = [None] * len(runs)
    while True:
        unsettled = [i for i, s in enumerate(states) if s is None or s.state not in SETTLED]
        for i, state in zip(unsettled, poll([runs[i] for i in unsettled])):
            states[i] = state
        bar.n = sum(s.state in ("done", "failed") for s in states)
        bar.refresh()
        if all(s.state in ENDED for s in states):
            bar.close()
            return states
        time.sleep(poll_s)


def outcomes(states: list[RunState]) -> dict[str, Outcome]:
    """Final states as outcomes: a run that failed, or was never submitted, failed."""
    return {s.run.run_id: Outcome("failed" if s.state in ("failed", "not submitted") else s.state, s.detail)
            for s in states}
