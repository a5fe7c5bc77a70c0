"""The submission ledger: which backend submitted which run as which job, kept in the results store.

One JSON line per submitted run in ``<results>/<table>/.slurm/submissions.jsonl`` (the folder's name predates
the other backends; kept so that stores with jobs in flight keep their records), written as the jobs are
submitted, so that a relaunch submits only runs neither done nor queued, and ``replicate.status`` asks the
backend that submitted each run where it stands.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..atomic import append_jsonl, read_jsonl

LEGACY_BACKEND = "slurm"  # records written before the ledger named the backend: only SLURM submitted then


def submissions_file(results: Path, table: str) -> Path:
    return Path(results) / table / ".slurm" / "submissions.jsonl"


def record(results: Path, table: str, backend: str, entries: list[dict]) -> None:
    """Append one record per submitted run (``run_id``, ``job_id`` and what the backend keeps), stamped with
    the backend's name and the time."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    append_jsonl(submissions_file(results, table), [{"submitted": now, **entry, "backend": backend}
                                                    for entry in entries])


def latest(results: Path, table: str) -> dict[str, dict]:
    """The most recent submission record of each run id, each naming its backend."""
    return {r["run_id"]: {"backend": LEGACY_BACKEND, **r} for r in read_jsonl(submissions_file(results, table))}
