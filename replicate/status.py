"""Where every run of a table stands: python -m replicate.status TABLE [--profile P] [--results DIR].

done (a readable ``result.json``) / corrupt (an unreadable one: a relaunch redoes it) / running / pending /
failed (with the last lines of its error) / not submitted, from the results store plus ``sacct`` for runs
submitted to SLURM. It owns the wait loop of ``--wait``.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import plan as planning
from . import spec as specs
from .config import PRECISIONS, PROFILES, PROTOCOLS, Setting, describe_overrides
from .errors import cli, folder_option
from .results import DEFAULT_RESULTS, check_store, run_folders
from .slurm import ACTIVE_STATES, PENDING, RUNNING, job_states, latest_submissions, pending_reasons, stuck_advice

# "pending" is SLURM's word for a queued job; a folder that holds nothing yet is "not started" (results.py), and
# a run neither done nor submitted is "not submitted" here.
STATES = ("done", "corrupt", "running", "pending", "stuck", "failed", "not submitted")
SETTLED = ("done",)  # a result, once written, is final: such a run is not polled again while waiting


@dataclass(frozen=True)
class RunState:
    run: planning.PlannedRun
    state: str  # one of STATES
    job_id: str = ""
    detail: str = ""


def error_tail(folder: str, job_id: str, lines: int = 3) -> str:
    """The failing task's error: the end of the last traceback in its log (where submitit writes it).

    In a multi-task job srun names the task that failed first (``srun: error: NODE: task 1: Killed``): its log
    is read, and a task killed without a traceback is reported as srun saw it. Other stderr lines (warnings
    the libraries print) are not errors and are skipped.
    """
    logs = sorted(Path(folder).glob(f"{job_id}_*_log.err")) or sorted(Path(folder).glob("*_log.err"))
    texts = {log: log.read_text(errors="replace").splitlines() for log in logs}
    failed = [match for text in texts.values() for line in text if (match := _SRUN_TASK.search(line))]
    if failed:
        task, reason = failed[0][1], failed[0][2]
        log = next((log for log in logs if _task_of(log) == task), None)
        tail = _traceback_tail(texts[log], lines) if log is not None else ""
        return f"{tail} (task {task}, log: {log})" if tail else f"task {task}: {reason} (logs: {folder})"
    for log in logs:
        tail = _traceback_tail(texts[log], lines)
        if tail:
            return f"{tail} (log: {log})"
    return f"no traceback in the logs of {folder}"


_SRUN_TASK = re.compile(r"srun: error: \S+: tasks? (\d+)(?:-\d+)?: (.*)")


def _traceback_tail(text: list[str], lines: int) -> str:
    """The last lines of the last traceback in a log (the exception and where it was raised), or ''."""
    starts = [i for i, line in enumerate(text) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return ""
    body = [line for line in text[starts[-1] + 1:] if line.strip()
            and not line.startswith(("submitit", "srun:", "slurmstepd:"))]
    return " | ".join(body[-lines:])


def _task_of(log: Path) -> str:
    """The task index in submitit's log name ``<job>_<task>_log.err``."""
    return log.name.rsplit("_", 2)[-2]


def run_states(runs: list[planning.PlannedRun], results: Path, table: str) -> list[RunState]:
    submitted = latest_submissions(results, table)
    folder_states = {run.run_id: run.state for run in runs}
    pending_ids = [submitted[r.run_id]["job_id"] for r in runs
                   if r.run_id in submitted and folder_states[r.run_id] != "done"]
    sacct = job_states(pending_ids) if pending_ids else {}
    queued = [job_id for job_id in pending_ids if sacct.get(job_id, "PENDING") in PENDING]
    reasons = pending_reasons(queued)
    return [_state(run, folder_states[run.run_id], submitted.get(run.run_id), sacct, reasons) for run in runs]


def _state(run: planning.PlannedRun, folder_state: str, record: dict | None, sacct: dict[str, str],
           reasons: dict[str, str] | None = None) -> RunState:
    if folder_state == "done":
        return RunState(run, "done", record["job_id"] if record else "")
    if record is None or folder_state == "corrupt" and sacct.get(record["job_id"], "") not in ACTIVE_STATES:
        if folder_state == "corrupt":
            return RunState(run, "corrupt", detail=f"{run.folder.result_file} is unreadable: a relaunch "
                                                   f"{run.folder.recovery()}")
        detail = "a checkpoint exists: it resumes when launched" if folder_state == "partial" else ""
        return RunState(run, "not submitted", detail=detail)
    job_id = record["job_id"]
    slurm_state = sacct.get(job_id, "PENDING")  # sacct can lag a fresh submission by a second
    if slurm_state in RUNNING:
        return RunState(run, "running", job_id)
    if slurm_state in PENDING:
        reason = (reasons or {}).get(job_id, "")
        advice = stuck_advice(job_id, reason) if reason else None
        if advice:
            return RunState(run, "stuck", job_id, advice)
        said = [*(["requeued"] if slurm_state != "PENDING" else []), *([f"SLURM: {reason}"] if reason else [])]
        return RunState(run, "pending", job_id, "; ".join(said))
    reason = "job ended without a result" if slurm_state == "COMPLETED" else slurm_state
    return RunState(run, "failed", job_id, f"{reason}: {error_tail(record['folder'], job_id)}")


def wait(runs: list[planning.PlannedRun], results: Path, table: str, progress: bool = True,
         poll_s: float = 5.0) -> list[RunState]:
    """Block until every run is done, failed or not submitted (a progress bar meanwhile); the final states.

    A done run is not polled again (its result.json is not re-read); a failed one is, since SLURM may
    still requeue a preempted job."""
    from tqdm import tqdm

    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=not progress, file=sys.stderr)
    states: list[RunState | None] = [None] * len(runs)
    while True:
        unsettled = [i for i, s in enumerate(states) if s is None or s.state not in SETTLED]
        for i, state in zip(unsettled, run_states([runs[i] for i in unsettled], results, table)):
            states[i] = state
        bar.n = sum(s.state in ("done", "failed") for s in states)
        bar.refresh()
        if all(s.state in ("done", "failed", "not submitted", "corrupt") for s in states):
            bar.close()
            return states
        time.sleep(poll_s)


def other_settings(results: Path, table: str, shown: Setting,
                   planned: frozenset[str] = frozenset()) -> dict[Setting, int]:
    """Setting -> run folders, for the settings other than ``shown`` with runs stored (``planned``: the run ids
    shown, never counted elsewhere)."""
    counts: Counter = Counter()
    for folder in run_folders(results, table):
        config = folder.config()
        setting = Setting.of(config) if config else None
        if setting is not None and setting != shown and folder.run_id not in planned:
            counts[setting] += 1
    return dict(counts)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.status", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("table", help="a table name or spec file")
    parser.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="results store")
    parser.add_argument("--profile", choices=tuple(PROFILES), default="full", help="profile to report")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="protocol to report (default: the profile's, "
                                                             "else the spec's)")
    parser.add_argument("--precision", choices=PRECISIONS, help="precision to report (default: the spec's)")
    parser.add_argument("--rows", help="comma-separated row ids or glob patterns")
    parser.add_argument("--seeds", type=int, help="seeds per row (default: the spec's)")
    parser.add_argument("--set", type=planning.override_option, action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="the overrides the runs were launched with (run --set), repeatable")
    args = parser.parse_args(argv)
    spec = specs.load(args.table)
    check_store(args.results, [spec.name])
    runs = planning.expand(spec, args.results, args.profile, args.seeds, args.rows, args.protocol, args.precision,
                           dict(args.overrides))
    protocol, precision = runs[0].config.protocol, runs[0].config.training.precision
    custom = describe_overrides(args.overrides)
    print(f"{spec.name}: profile {args.profile}, protocol {protocol}, precision {precision}"
          + (f", custom recipe ({custom})" if custom else "") + f", results in {args.results / spec.name}")
    states = run_states(runs, args.results, spec.name)
    width = max(len(s.run.row.id) for s in states)
    for s in states:
        job = f"job {s.job_id}" if s.job_id else ""
        print(f"{s.run.row.id:<{width}}  seed {s.run.config.seed}  {s.state:<13} {job:<12} {s.detail}".rstrip())
    counts = {name: sum(s.state == name for s in states) for name in STATES}
    print(", ".join(f"{n} {name}" for name, n in counts.items() if n) + f" ({len(states)} runs)")
    shown = Setting(args.profile, protocol, precision, tuple(sorted(dict(args.overrides).items())))
    others = other_settings(args.results, spec.name, shown, frozenset(run.run_id for run in runs))
    for other, count in sorted(others.items()):
        changed = describe_overrides(other.overrides)
        print(f"also in the store: {count} run folder(s) of profile {other.profile}, protocol {other.protocol}, "
              f"precision {other.precision}" + (f", custom recipe ({changed})" if changed else "")
              + f": python -m replicate.status {spec.argument} {other.options}{other.set_options}"
              + ("" if args.results == DEFAULT_RESULTS else f" --results {args.results}"))
    return 1 if counts["failed"] or counts["corrupt"] or counts["stuck"] else 0


if __name__ == "__main__":
    sys.exit(main())
