"""SLURM itself, for the ``slurm`` backend: cluster configs, what one run's job asks for, and what ``sinfo``,
``sacct`` and ``squeue`` and the jobs' logs say.

A cluster config is a YAML file layered over the shipped ``clusters/default.yaml`` (every key a cluster config sets
replaces the default's; ``--cluster-config NAME|PATH``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..config import Recipe
from ..errors import UserError

PROFILES_DIR = Path(__file__).resolve().parent.parent / "clusters"
DEFAULT_PROFILE = PROFILES_DIR / "default.yaml"  # every key with its default and what it means
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED"}
ACTIVE_STATES = RUNNING | PENDING  # a job in one of these still holds its run: it is not submitted again


# Reasons SLURM gives a pending job that waiting does not cure: the request cannot be met where it was sent,
# or a limit of the account or QOS stands in the way. ``status`` shows such a job as stuck, with the fix.
STUCK_REASONS = {
    "PartitionConfig": "the partition cannot satisfy the request (GPUs, CPUs, memory or nodes)",
    "PartitionTimeLimit": "the time asked for is over the partition's limit",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "ReqNodeNotAvail": "the nodes the job needs are down, drained or reserved",
    "AssocGrpGRES": "the account's GPU limit is below what the job asks for, or taken by its other jobs",
    "AssocMaxWallDurationPerJobLimit": "the time asked for is over the account's limit",
    "QOSMaxWallDurationPerJobLimit": "the time asked for is over the QOS's limit",
    "QOSMaxGRESPerJob": "more GPUs than the QOS allows a job",
    "InvalidAccount": "the account does not exist or may not use the partition",
    "InvalidQOS": "the QOS does not exist or may not be used",
    "BadConstraints": "no node has the features the --constraint asks for",
}


class SlurmError(UserError):
    """SLURM unreachable, or refusing a job: one line with SLURM's own message."""


@dataclass(frozen=True)
class Partition:
    """What a partition's nodes offer (the largest node where they differ), as sinfo says."""

    name: str
    time_min: int | None  # None: no limit
    gpus: int  # per node
    cpus: int  # per node
    mem_mb: int | None


@dataclass(frozen=True)
class ClusterConfig:
    """sbatch settings (defaults: ``clusters/default.yaml``); ``time_min`` maps recipes (and ``default``) to
    wall-clock limits in minutes."""

    name: str
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: float | None
    time_min: dict
    array_parallelism: int
    max_requeues: int
    signal_delay_s: int
    extra_sbatch: dict
    setup: tuple[str, ...]
    gpu_kind: str | None = None  # the GPUs' name as torch reports it, or a part of it: prices --dry-run (issue 31)

    def time_for(self, recipe: str) -> int:
        return int(self.time_min.get(recipe, self.time_min["default"]))


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SlurmError(f"{path} is not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise SlurmError(f"{path}: a cluster config is a mapping of sbatch settings")
    return data


def cluster_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise SlurmError(f"unknown cluster config {name_or_path!r}: choose one of {names} or give a YAML path")
    return path


# Each key's check and what a good value is (the one-line message says it).
_WHOLE = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0")
_TEXT = (lambda v: v is None or isinstance(v, str), "a string or null")
_CHECKS = {
    "partition": _TEXT, "account": _TEXT, "qos": _TEXT, "constraint": _TEXT,
    "gpu_kind": (lambda v: v is None or isinstance(v, str) and v.strip() != "",
                 "the GPUs' name or a part of it (e.g. \"H100\"), or null"),
    "gpus_per_node": _WHOLE, "cpus_per_task": _WHOLE, "array_parallelism": _WHOLE, "max_requeues": _WHOLE,
    "signal_delay_s": _WHOLE,
    "mem_gb": (lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
               "a number of GB > 0 or null"),
    "time_min": (lambda v: all(isinstance(k, str) and _WHOLE[0](m) and m > 0 for k, m in v.items()),
                 "minutes > 0, one number or {recipe: minutes, default: minutes}"),
    "extra_sbatch": (lambda v: isinstance(v, dict), "a mapping of sbatch options, e.g. {exclude: node3}"),
    "setup": (lambda v: isinstance(v, list) and all(isinstance(line, str) for line in v),
              "a list of shell lines"),
}


def load_cluster_config(name_or_path: str) -> ClusterConfig:
    """A cluster config by name (``clusters/NAME.yaml``) or path, layered over the default one and validated."""
    path = cluster_config_path(name_or_path)
    data = _read(path)
    unknown = set(data) - set(_CHECKS)
    if unknown:
        raise SlurmError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_CHECKS))}")
    default = _read(DEFAULT_PROFILE)
    layered = {**default, **data}
    if not isinstance(layered["time_min"], dict):
        layered["time_min"] = {"default": layered["time_min"]}
    layered["time_min"] = {"default": default["time_min"]["default"], **layered["time_min"]}
    layered["setup"] = layered["setup"] or []
    layered["extra_sbatch"] = layered["extra_sbatch"] or {}
    for key, (ok, meaning) in _CHECKS.items():
        if not ok(layered[key]):
            raise SlurmError(f"{path}: key {key!r} must be {meaning}, not {layered[key]!r}")
    layered["setup"] = tuple(layered["setup"])
    return ClusterConfig(name=path.stem, **layered)


def with_overrides(cluster: ClusterConfig, partition: str | None = None, gpus: int | None = None,
                   time_min: int | None = None) -> ClusterConfig:
    """The cluster config with the command line's ``--partition``, ``--gpus`` and ``--time``."""
    changes = {}
    if partition:
        changes["partition"] = partition
    if gpus is not None:
        changes["gpus_per_node"] = gpus
    if time_min:
        changes["time_min"] = {"default": time_min}
    return replace(cluster, **changes)


# -- what each job asks for --------------------------------------------------------------------------------
def job_parameters(cluster: ClusterConfig, recipe: Recipe, name: str) -> dict:
    """submitit parameters of one run: GPU runs get one task per GPU (DDP), spread over as many nodes.

    Tasks per node divide the recipe's GPUs exactly (4 GPUs on nodes of 3: 2 nodes of 2), so that the world
    size, and with it the BatchNorm batch, is the recipe's.
    """
    gpus = recipe.gpus if cluster.gpus_per_node else 0
    per_node = max((n for n in range(1, gpus + 1) if gpus % n == 0 and n <= cluster.gpus_per_node), default=0)
    nodes = gpus // per_node if per_node else 1
    params = {
        "name": name, "timeout_min": cluster.time_for(recipe.name), "nodes": nodes,
        "tasks_per_node": max(per_node, 1), "cpus_per_task": cluster.cpus_per_task,
        "slurm_array_parallelism": cluster.array_parallelism, "slurm_signal_delay_s": cluster.signal_delay_s,
        "slurm_additional_parameters": dict(cluster.extra_sbatch),
    }
    if per_node:
        params["gpus_per_node"] = per_node
    if nodes * max(per_node, 1) > 1:  # one task of a DDP job dying ends the job, not a hang until the limit
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    if cluster.mem_gb:
        params["mem_gb"] = cluster.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cluster, key):
            params[f"slurm_{key}"] = getattr(cluster, key)
    if cluster.setup:
        params["slurm_setup"] = list(cluster.setup)
    return params


def world_size(params: dict) -> int:
    """Processes training one run under :func:`job_parameters`: one per GPU task, else a single one."""
    return params["nodes"] * params["tasks_per_node"] if params.get("gpus_per_node") else 1


# -- talking to SLURM --------------------------------------------------------------------------------------
def ensure_reachable() -> None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None or shutil.which("sacct") is None:
        raise SlurmError("SLURM is not reachable: sbatch/sinfo/sacct are not on PATH; install the SLURM client or "
                         "use --cluster local")
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        raise SlurmError("SLURM is not reachable: sinfo did not answer within 15 s (is slurmctld up and "
                         "SLURM_CONF right?)") from None
    if probe.returncode:
        message = " ".join(probe.stderr.split()) or f"sinfo exited {probe.returncode}"
        raise SlurmError(f"SLURM is not reachable: {message} (is SLURM_CONF set and slurmctld up?)")


def pending_reasons(job_ids: list[str]) -> dict[str, str]:
    """SLURM's reason for each queued job (``squeue %r``: Priority, Resources, PartitionConfig, ...); empty when
    squeue is missing or no longer knows the jobs (a reason only matters while a job waits)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        completed = subprocess.run(["squeue", "-h", "-o", "%i|%r", "-j", ",".join(job_ids)], capture_output=True,
                                   text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    reasons = {}
    for line in completed.stdout.splitlines() if completed.returncode == 0 else []:
        job_id, _, reason = line.partition("|")
        for one in _expand_array_id(job_id.strip()):
            reasons[one] = reason.strip()
    return reasons


def stuck_advice(job_id: str, reason: str) -> str | None:
    """For a reason in :data:`STUCK_REASONS`: what it means and what to do; None for a job that only waits."""
    why = STUCK_REASONS.get(reason.split(",")[0].strip("() "))
    if why is None:
        return None
    return (f"SLURM: {reason}: {why}; it will not start by waiting: scancel {job_id.split('_')[0]} and relaunch "
            f"with a request that fits (--partition, --gpus, --time, or the cluster config; "
            f"sinfo -o '%P %l %G %c %m' lists what each partition offers)")


def check_partitions(cluster: ClusterConfig, jobs: list[dict]) -> None:
    """Refuse, before anything is submitted, a job its partition can never start (``sinfo``: time limit, GPUs
    and CPUs per node, memory); checked when the cluster config names its partition. ``jobs``: submitit parameters."""
    if not cluster.partition or not jobs:
        return
    partition = partition_info(cluster.partition)
    if partition is None:
        return  # sbatch names an unknown partition itself, in one line
    for params in jobs:
        check_partition(partition, params)


def partition_info(name: str) -> Partition | None:
    try:
        completed = subprocess.run(["sinfo", "-h", "-p", name, "-o", "%l|%G|%c|%m"], capture_output=True, text=True,
                                   timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.split("|") for line in completed.stdout.splitlines() if line.count("|") == 3]
    if completed.returncode or not lines:
        return None
    times = [_minutes(fields[0]) for fields in lines]
    return Partition(name, None if None in times else max(times), max(_gpus(fields[1]) for fields in lines),
                     max(_number(fields[2]) for fields in lines), max(_number(fields[3]) for fields in lines))


def check_partition(partition: Partition, params: dict) -> None:
    """One line naming what can never fit: the time, the GPUs, the CPUs or the memory per node."""
    where = f"partition '{partition.name}' can never start this job"
    time_min, gpus = params["timeout_min"], params.get("gpus_per_node", 0)
    cpus = params["tasks_per_node"] * params["cpus_per_task"]
    if partition.time_min is not None and time_min > partition.time_min:
        raise SlurmError(f"{where}: it asks for {time_min} min, over the partition's time limit of "
                         f"{partition.time_min} min: lower --time (runs resume after a requeue) or choose "
                         f"another --partition")
    if gpus and partition.gpus == 0:
        raise SlurmError(f"{where}: the partition has no GPUs, the job asks for {gpus} per node: choose a GPU "
                         f"--partition, or --gpus 0 to train on CPUs")
    if gpus > partition.gpus:
        raise SlurmError(f"{where}: it asks for {gpus} GPUs per node, the partition has {partition.gpus} GPUs per "
                         f"node: set --gpus {partition.gpus} (the job spreads over more nodes) or choose another "
                         f"--partition")
    if cpus > partition.cpus:
        raise SlurmError(f"{where}: it asks for {cpus} CPUs per node ({params['tasks_per_node']} task(s) x "
                         f"{params['cpus_per_task']}), the partition's nodes have {partition.cpus} CPUs per node: "
                         f"lower cpus_per_task in the cluster config")
    mem_gb = params.get("mem_gb")
    if mem_gb and partition.mem_mb and mem_gb * 1024 > partition.mem_mb:
        raise SlurmError(f"{where}: it asks for {mem_gb:g} GB of memory per node, the partition's nodes have "
                         f"{partition.mem_mb / 1024:.0f} GB: lower mem_gb in the cluster config")


def _minutes(text: str) -> int | None:
    """sinfo's time limit ("infinite", "1-00:00:00", "12:00:00", "30:00", "30") in minutes; None: no limit."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def _gpus(gres: str) -> int:
    """GPUs per node from sinfo's GRES ("gpu:4", "gpu:a100:2(S:0-1)", "(null)")."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def _number(text: str) -> int:
    digits = re.match(r"\d+", text.strip())
    return int(digits[0]) if digits else 0


def job_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job (array task ids like 12_3 included) from sacct, newest record per id."""
    if not job_ids:
        return {}
    try:
        completed = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
                                   capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmError(f"sacct could not tell the jobs' states ({type(error).__name__}): the suite needs SLURM "
                         f"accounting (sacct) to follow jobs") from None
    if completed.returncode:
        message = " ".join(completed.stderr.split()) or f"sacct exited {completed.returncode}"
        raise SlurmError(f"sacct could not tell the jobs' states: {message} (is accounting enabled?)")
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


# -- the jobs' logs ------------------------------------------------------------------------------------
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
        tail = traceback_tail(texts[log], lines) if log is not None else ""
        return f"{tail} (task {task}, log: {log})" if tail else f"task {task}: {reason} (logs: {folder})"
    for log in logs:
        tail = traceback_tail(texts[log], lines)
        if tail:
            return f"{tail} (log: {log})"
    return f"no traceback in the logs of {folder}"


_SRUN_TASK = re.compile(r"srun: error: \S+: tasks? (\d+)(?:-\d+)?: (.*)")


def traceback_tail(text: list[str], lines: int) -> str:
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
