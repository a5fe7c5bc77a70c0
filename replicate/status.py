"""Where every run of a table stands: ``python -m replicate.status TABLE [--results DIR] [--profile P]``.

done (``result.json`` in the store) / running / pending / failed (with the last lines of its error) /
not submitted, from the results store plus ``sacct`` for runs submitted to SLURM.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from . import plan as planning
from . import spec as specs
from .config import PROFILES, PROTOCOLS
from .errors import cli

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"}


@dataclass(frozen=True)
class RunState:
    run: planning.PlannedRun
    state: str  # done | running | pending | failed | not submitted
    job_id: str = ""
    detail: str = ""


def error_tail(folder: str, job_id: str, lines: int = 3) -> str:
    """The last lines of a job's error log, where submitit writes the remote traceback."""
    logs = sorted(Path(folder).glob(f"{job_id}_*_log.err")) or sorted(Path(folder).glob("*_log.err"))
    if not logs:
        return f"no log in {folder}"
    text = [line for line in logs[0].read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith(("submitit", "srun:"))]
    return " | ".join(text[-lines:]) + f" (log: {logs[0]})"


def run_states(runs: list[planning.PlannedRun], results: Path, table: str) -> list[RunState]:
    from .slurm import job_states, latest_submissions

    submitted = latest_submissions(results, table)
    pending_ids = [submitted[r.run_id]["job_id"] for r in runs
                   if r.run_id in submitted and r.state != "done"]
    sacct = job_states(pending_ids) if pending_ids else {}
    return [_state(run, submitted.get(run.run_id), sacct) for run in runs]


def _state(run: planning.PlannedRun, record: dict | None, sacct: dict[str, str]) -> RunState:
    if run.state == "done":
        return RunState(run, "done", record["job_id"] if record else "")
    if record is None:
        detail = "a checkpoint exists: it resumes when launched" if run.state == "partial" else ""
        return RunState(run, "not submitted", detail=detail)
    job_id = record["job_id"]
    slurm_state = sacct.get(job_id, "PENDING")  # sacct can lag a fresh submission by a second
    if slurm_state in RUNNING:
        return RunState(run, "running", job_id)
    if slurm_state in PENDING:
        return RunState(run, "pending", job_id, "requeued" if slurm_state != "PENDING" else "")
    reason = "job ended without a result" if slurm_state == "COMPLETED" else slurm_state
    return RunState(run, "failed", job_id, f"{reason}: {error_tail(record['folder'], job_id)}")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.status", description=__doc__.split("\n")[0])
    parser.add_argument("table", help="a table name or spec file")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--profile", choices=tuple(PROFILES), default="full")
    parser.add_argument("--protocol", choices=PROTOCOLS)
    parser.add_argument("--rows")
    parser.add_argument("--seeds", type=int)
    args = parser.parse_args(argv)
    spec = specs.load(args.table)
    runs = planning.expand(spec, args.results, args.profile, args.seeds, args.rows, args.protocol)
    states = run_states(runs, args.results, spec.name)
    width = max(len(s.run.row.id) for s in states)
    for s in states:
        job = f"job {s.job_id}" if s.job_id else ""
        print(f"{s.run.row.id:<{width}}  seed {s.run.config.seed}  {s.state:<13} {job:<12} {s.detail}".rstrip())
    counts = {name: sum(s.state == name for s in states)
              for name in ("done", "running", "pending", "failed", "not submitted")}
    print(", ".join(f"{n} {name}" for name, n in counts.items() if n) + f" ({len(states)} runs)")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
