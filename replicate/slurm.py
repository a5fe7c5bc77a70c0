"""SLURM execution through submitit: one job-array task per run, requeued on preemption and timeout.

Cluster settings come from a YAML profile in ``slurm/`` (``--cluster-config NAME|PATH``); every submission is
recorded in the results store (``<results>/<table>/.slurm/submissions.jsonl``) so that a relaunch submits only
runs that are neither done nor queued or running, and ``python -m replicate.status`` can tell each run's state
from the store plus ``sacct``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .errors import UserError
from .spec import TABLES_DIR
from .store import append_jsonl, read_jsonl

PROFILES_DIR = Path(__file__).resolve().parent.parent / "slurm"
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


class SlurmError(UserError):
    """SLURM unreachable, or refusing a job: one line with SLURM's own message."""


@dataclass(frozen=True)
class ClusterProfile:
    """sbatch settings; ``time_min`` maps recipe names (and ``default``) to wall-clock limits in minutes."""

    name: str = "default"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: dict = field(default_factory=lambda: {"default": 1440})
    array_parallelism: int = 64
    max_requeues: int = 5
    signal_delay_s: int = 120
    extra_sbatch: dict = field(default_factory=dict)
    setup: tuple[str, ...] = ()

    def time_for(self, recipe: str) -> int:
        return int(self.time_min.get(recipe, self.time_min.get("default", 1440)))


def load_profile(name_or_path: str) -> ClusterProfile:
    """A profile by name (``slurm/NAME.yaml``) or path, validated: unknown keys and bad values fail here."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise SlurmError(f"unknown cluster profile {name_or_path!r}: choose one of {names} or give a YAML path")
    data = yaml.safe_load(path.read_text()) or {}
    allowed = {f.name for f in fields(ClusterProfile)} - {"name"}
    unknown = set(data) - allowed
    if unknown:
        raise SlurmError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(allowed))}")
    if "time_min" in data and not isinstance(data["time_min"], dict):
        data["time_min"] = {"default": data["time_min"]}
    if "setup" in data:
        data["setup"] = tuple(data["setup"])
    try:
        profile = ClusterProfile(name=path.stem, **data)
    except TypeError as error:
        raise SlurmError(f"{path}: {error}") from None
    for key in ("cpus_per_task", "array_parallelism", "gpus_per_node", "max_requeues"):
        if not isinstance(getattr(profile, key), int) or getattr(profile, key) < 0:
            raise SlurmError(f"{path}: key {key!r} must be a whole number >= 0")
    return profile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SLURM (--cluster slurm)")
    group.add_argument("--cluster-config", default="default", metavar="NAME|PATH",
                       help="cluster profile: a name in slurm/ (default, local) or a YAML file")
    group.add_argument("--partition", help="override the profile's partition")
    group.add_argument("--gpus", type=int, help="override the profile's GPUs per node")
    group.add_argument("--time", type=int, metavar="MINUTES", help="override the wall-clock limit of every job")
    group.add_argument("--wait", action="store_true",
                       help="block until every submitted run finishes; exit non-zero if any failed")


def with_overrides(profile: ClusterProfile, args) -> ClusterProfile:
    from dataclasses import replace

    changes = {}
    if getattr(args, "partition", None):
        changes["partition"] = args.partition
    if getattr(args, "gpus", None) is not None:
        changes["gpus_per_node"] = args.gpus
    if getattr(args, "time", None):
        changes["time_min"] = {"default": args.time}
    return replace(profile, **changes)


# -- what each job asks for --------------------------------------------------------------------------------
def job_parameters(profile: ClusterProfile, recipe, name: str) -> dict:
    """submitit parameters of one run: GPU runs get one task per GPU (DDP), spread over as many nodes."""
    gpus = recipe.gpus if profile.gpus_per_node else 0
    per_node = min(gpus, profile.gpus_per_node) if gpus else 0
    nodes = math.ceil(gpus / per_node) if per_node else 1
    params = {
        "name": name, "timeout_min": profile.time_for(recipe.name), "nodes": nodes,
        "tasks_per_node": max(per_node, 1), "cpus_per_task": profile.cpus_per_task,
        "slurm_array_parallelism": profile.array_parallelism, "slurm_signal_delay_s": profile.signal_delay_s,
        "slurm_additional_parameters": dict(profile.extra_sbatch),
    }
    if per_node:
        params["gpus_per_node"] = per_node
    if profile.mem_gb:
        params["mem_gb"] = profile.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[f"slurm_{key}"] = getattr(profile, key)
    if profile.setup:
        params["slurm_setup"] = list(profile.setup)
    return params


def sbatch_script(profile: ClusterProfile, recipe, folder: Path) -> str:
    """The sbatch script submitit would write for one run (for tests and ``--dry-run`` inspection)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**job_parameters(profile, recipe, "replicate"))
    return executor._executor._make_submission_file_text("python -m submitit.core._submit", "%j")


# -- talking to SLURM --------------------------------------------------------------------------------------
def ensure_reachable() -> None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise SlurmError("SLURM is not reachable: sbatch/sinfo are not on PATH; install the SLURM client or use "
                         "--cluster local")
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        raise SlurmError("SLURM is not reachable: sinfo did not answer within 15 s (is slurmctld up and "
                         "SLURM_CONF right?)") from None
    if probe.returncode:
        message = " ".join(probe.stderr.split()) or f"sinfo exited {probe.returncode}"
        raise SlurmError(f"SLURM is not reachable: {message} (is SLURM_CONF set and slurmctld up?)")


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job (array task ids like 12_3 included) from sacct, newest record per id."""
    if not job_ids:
        return {}
    completed = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                               capture_output=True, text=True, timeout=60)
    states = {}
    for line in completed.stdout.splitlines():
        job_id, _, state = line.partition("|")
        for one in _expand_array_id(job_id.strip()):
            states[one] = state.split()[0] if state else "UNKNOWN"
    return states


def _expand_array_id(job_id: str) -> list[str]:
    """sacct shows a pending array as ``12_[0-7,9%4]``: one id per task."""
    match = re.fullmatch(r"(\d+)_\[([^\]%]+)(?:%\d+)?\]", job_id)
    if not match:
        return [job_id]
    ids = []
    for part in match[2].split(","):
        low, _, high = part.partition("-")
        ids += [f"{match[1]}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def submissions_file(results: Path, table: str) -> Path:
    return Path(results) / table / ".slurm" / "submissions.jsonl"


def latest_submissions(results: Path, table: str) -> dict[str, dict]:
    """The most recent submission record of each run id."""
    return {r["run_id"]: r for r in read_jsonl(submissions_file(results, table))}


def active_runs(results: Path, table: str) -> set[str]:
    """Run ids whose latest job is still queued or running."""
    latest = latest_submissions(results, table)
    states = job_states([r["job_id"] for r in latest.values()])
    return {run_id for run_id, r in latest.items() if states.get(r["job_id"], "PENDING") in ACTIVE_STATES}


# -- submission ---------------------------------------------------------------------------------------------
def submit(spec, runs, args) -> int:
    """Submit every run that is not done, queued or running; print job ids and log folders."""
    import submitit

    from .launch import RunJob

    ensure_reachable()
    profile = with_overrides(load_profile(args.cluster_config), args)
    busy = active_runs(args.results, spec.name)
    todo = [run for run in runs if run.run_id not in busy]
    if len(todo) < len(runs):
        print(f"{len(runs) - len(todo)} run(s) already queued or running: not submitted again")
    if not todo:
        return _wait(spec, runs, args) if args.wait else 0
    folder = Path(args.results).absolute() / ".submitit" / f"{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    jobs = []
    for recipe_name in sorted({run.config.recipe.name for run in todo}):
        group = [run for run in todo if run.config.recipe.name == recipe_name]
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                         slurm_max_num_timeout=profile.max_requeues)
        executor.update_parameters(**job_parameters(profile, group[0].config.recipe, f"{spec.name}"))
        jobs += zip(group, _submit_array(executor, [RunJob.of(run, args.data_root, args.download)
                                                    for run in group]))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    append_jsonl(submissions_file(args.results, spec.name), [
        {"run_id": run.run_id, "row": run.row.id, "seed": run.config.seed, "job_id": job.job_id,
         "folder": str(job.paths.folder), "submitted": now} for run, job in jobs])
    array_ids = sorted({job.job_id.split("_")[0] for _, job in jobs})
    print(f"submitted {len(jobs)} run(s) as job array(s) {', '.join(array_ids)} "
          f"(profile {profile.name}); logs in {folder}")
    table = spec.name if spec.path.parent == TABLES_DIR else spec.path
    print(f"follow them with: python -m replicate.status {table} --profile {args.profile} "
          f"--results {args.results}")
    return _wait(spec, runs, args) if args.wait else 0


def _submit_array(executor, job_objects: list) -> list:
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), executor.batch():  # submitit echoes sbatch's stderr
            jobs = [executor.submit(job) for job in job_objects]
    except Exception as error:
        message = " ".join(str(error).split()) or buffer.getvalue().strip()
        raise SlurmError(f"sbatch refused the jobs: {message}") from None
    return jobs


def _wait(spec, runs, args) -> int:
    """Block until every run of the plan is done or failed, with a progress bar; 1 if any failed."""
    from tqdm import tqdm

    from .status import run_states

    bar = tqdm(total=len(runs), desc="runs", unit="run", disable=args.no_progress, file=sys.stderr)
    while True:
        states = run_states(runs, args.results, spec.name)
        finished = sum(s.state in ("done", "failed") for s in states)
        bar.n = finished
        bar.refresh()
        if finished == len(runs) or all(s.state in ("done", "failed", "not submitted") for s in states):
            break
        time.sleep(5)
    bar.close()
    failed = [s for s in states if s.state == "failed"]
    for s in failed:
        print(f"error: run {s.run.row.id} seed {s.run.config.seed} failed: {s.detail}", file=sys.stderr)
    missing = [s for s in states if s.state == "not submitted"]
    print(f"{len(runs) - len(failed) - len(missing)} of {len(runs)} runs done")
    return 1 if failed or missing else 0
