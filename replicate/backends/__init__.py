"""Execution backends: where and how planned runs train. ``BACKENDS`` is the registry ``--cluster`` offers.

Each backend implements :class:`Backend` (``base.py``) in a module of its own: ``inline`` (this process),
``local`` (submitit subprocesses of this machine), ``slurm`` (job arrays on a SLURM cluster). All run the same
job object (:class:`RunJob`, ``job.py``). A new backend is one module plus one line below.
"""
from __future__ import annotations

from pathlib import Path

from ..plan import PlannedRun
from .base import STATES, Backend, RunState
from .base import run_states as _run_states
from .inline import InlineBackend
from .job import LaunchOptions, Outcome, RunJob
from .local import LocalBackend
from .slurm import SlurmBackend

BACKENDS: dict[str, Backend] = {"inline": InlineBackend(), "local": LocalBackend(), "slurm": SlurmBackend()}

__all__ = ["BACKENDS", "STATES", "Backend", "LaunchOptions", "Outcome", "RunJob", "RunState", "launch",
           "run_states"]


def launch(runs: list[PlannedRun], options: LaunchOptions, backend: str = "inline") -> dict[str, Outcome]:
    """Run (or submit) ``runs`` with a backend of :data:`BACKENDS` (and, with ``options.wait``, wait for what it
    submitted); each run id's outcome."""
    if not runs:
        return {}
    chosen = BACKENDS[backend]
    outcome = chosen.submit(runs, options)
    if options.wait:
        outcome |= chosen.wait(runs, options)
    return outcome


def run_states(runs: list[PlannedRun], results: Path, table: str) -> list[RunState]:
    """Each run's state: its folder's, else the word of the backend that submitted it (the ledger says which)."""
    return _run_states(runs, results, table, BACKENDS)
