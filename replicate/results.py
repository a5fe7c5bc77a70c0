"""The results store: one owner for a run's folder (:class:`RunFolder`) and its record (:class:`RunResult`).

``results/<table>/<run-id>/`` holds ``config.json`` (the resolved :class:`RunConfig`), ``provenance.json``
(code version, packages, host, device, threads, command line), ``metrics.jsonl`` (one record per epoch),
``gradstats.jsonl`` (when gradient statistics are on), ``result.json`` (written last: its presence means
*done*) and ``checkpoints/`` (not meant for version control). Nothing else in the suite spells these names.

A ``result.json`` that cannot be read back (truncated, empty, not the engine's) makes its run *corrupt*:
reported as such everywhere. A relaunch rebuilds it when the run's final checkpoint and ``metrics.jsonl`` are
intact (:meth:`RunFolder.rebuildable`: the engine resumes after the last epoch and writes what it wrote the
first time), else redoes the run; either way the broken file or folder is first moved aside
(``<table>/.aside/``), never deleted. The public API the analysis layer reads through is :func:`load`,
:func:`load_metrics` and :func:`load_gradstats` (pandas), and :func:`runs` (typed).
"""
from __future__ import annotations

import contextlib
import json
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable

import pandas as pd

from .config import RunConfig, describe_overrides
from .errors import UserError
from .atomic import append_jsonl, atomic_write_json, exclusive, read_checkpoint, read_jsonl, truncate_jsonl

# A run folder's states: done (a readable result.json), corrupt (an unreadable one), partial (a checkpoint, no
# result), not started (neither). "pending" is not one of them: it is a scheduler's word (queued), status's.
NOT_STARTED = "not started"
FOLDER_STATES = ("done", "corrupt", "partial", NOT_STARTED)

DEFAULT_RESULTS = Path("results")
PACKAGES = ("torch", "torchvision", "fvcore", "submitit", "numpy", "pandas")
SCHEMA = 2  # of result.json; 1 = the first results (no "schema" key), read the same way
OUTPUTS = ("results", "tables/generated", "figures")  # what the suite writes: never makes the code "dirty"


class CorruptResult(UserError):
    """A ``result.json`` that is not a result the engine wrote; the message names the file."""


@dataclass(frozen=True)
class Scores:
    """Errors (%) of one epoch's weights: the selected, the final or the best-on-evaluation epoch."""

    epoch: int | None
    top1_err: float | None
    top5_err: float | None
    split: str | None = None  # best: the split it was best on (test, or val under the clean protocol)
    val_top1_err: float | None = None  # selected, clean protocol: its validation error

    def to_dict(self) -> dict:
        extra = {k: getattr(self, k) for k in ("split", "val_top1_err") if getattr(self, k) is not None}
        return {"epoch": self.epoch, "top1_err": self.top1_err, "top5_err": self.top5_err, **extra}

    @classmethod
    def from_dict(cls, data: dict) -> "Scores":
        """Checked field by field: a wrong-typed value (a hand edit, another tool) is a corrupt result, named,
        not an error deep inside a table or figure."""
        values = {f.name: data.get(f.name) for f in fields(cls)}
        for name, value in values.items():
            kinds = (str,) if name == "split" else (int,) if name == "epoch" else (int, float)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise TypeError(f"field {name!r} is {value!r}, not a {'number' if name != 'split' else 'name'}")
        return cls(**values)


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports; written once, as ``result.json``, by the engine (or by ``evaluate``)."""

    run_id: str
    config: RunConfig
    selected: Scores  # what the tables report: best test epoch (paper protocol) or validation-selected (clean)
    final: Scores
    best: Scores
    params: int
    macs: int
    wall_time_s: float
    provenance: dict
    table: str | None = None
    row: str | None = None
    label: str | None = None
    published: dict | None = None  # what the paper printed for the row, when it is comparable
    execution: dict = field(default_factory=dict)  # device, threads, world_size, bn_batch of the run
    kind: str = "trained"  # trained here | released (the authors' checkpoint, re-evaluated)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(config=self.config.to_dict(), protocol=self.config.protocol, schema=SCHEMA,
                    **{k: getattr(self, k).to_dict() for k in ("selected", "final", "best")})
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        """Read a stored result (any schema so far); ``KeyError``/``TypeError``/``ValueError`` if it is not one."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["config"] = RunConfig.from_dict(data["config"])
        for key in ("selected", "final", "best"):
            values[key] = Scores.from_dict(data[key])
        if not isinstance(values["run_id"], str):
            raise ValueError("no run id")
        values["provenance"] = data.get("provenance") or {}
        return cls(**values)

    @property
    def seed(self) -> int:
        return self.config.seed


class RunFolder:
    """One run's folder: its files, its state, its logs, its checkpoints and its result."""

    CONFIG, PROVENANCE, RESULT = "config.json", "provenance.json", "result.json"
    LOGS = ("metrics", "gradstats")  # JSON-lines logs, one record per epoch / logged step

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def result_file(self) -> Path:
        return self.path / self.RESULT

    def log_file(self, name: str) -> Path:
        return self.path / f"{name}.jsonl"

    # -- state --------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """One of :data:`FOLDER_STATES`: what the folder holds, whatever a scheduler says of the run."""
        if self.result_file.is_file():
            return "done" if self.try_result() is not None else "corrupt"
        if any(self.checkpoints.glob("*.pt")):
            return "partial"
        return NOT_STARTED

    def result(self) -> RunResult:
        """The run's result; :class:`CorruptResult` (naming the file) if it is unreadable."""
        try:
            return RunResult.from_dict(json.loads(self.result_file.read_text()))
        except FileNotFoundError:
            raise CorruptResult(f"{self.result_file} does not exist: the run has not finished") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            reason = "empty" if self.result_file.is_file() and not self.result_file.stat().st_size else \
                f"{type(error).__name__}: {' '.join(str(error).split())[:80]}"
            raise CorruptResult(f"{self.result_file} is not a result the engine wrote ({reason}); "
                                f"a relaunch rebuilds it from the run's final checkpoint if intact, else "
                                f"redoes the run") from None

    def try_result(self) -> RunResult | None:
        try:
            return self.result()
        except CorruptResult:
            return None

    # -- writing (the engine) ------------------------------------------------------------------------------
    def write_config(self, config: RunConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / self.CONFIG, config.to_dict())

    def config(self) -> RunConfig | None:
        """The stored config, or None for a folder being created right now (or not a run)."""
        try:
            return RunConfig.from_dict(json.loads((self.path / self.CONFIG).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def provenance(self) -> dict:
        path = self.path / self.PROVENANCE
        return json.loads(path.read_text()) if path.is_file() else {}

    def record_provenance(self, device: str) -> None:
        """Written once, when the run first starts (a resumed run keeps its first record)."""
        if not (self.path / self.PROVENANCE).exists():
            atomic_write_json(self.path / self.PROVENANCE, provenance(device))

    def resumed_elsewhere(self, epoch: int, here: dict) -> str | None:
        """When the run resumes after ``epoch`` on another device or thread count (``here``: device, threads)
        than it started on: the warning to give, and the resume recorded in its provenance
        (``resumed_elsewhere``); None when it resumes where it started."""
        started = self.provenance()
        if not started or (started.get("device"), started.get("threads")) == (here["device"], here["threads"]):
            return None
        record = {"after_epoch": epoch, **here, "host": socket.gethostname(),
                  "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(self.path / self.PROVENANCE,
                          {**started, "resumed_elsewhere": [*started.get("resumed_elsewhere", []), record]})
        return (f"run {self.run_id} started on {started.get('device')} with {started.get('threads')} threads and "
                f"resumes after epoch {epoch} on {here['device']} with {here['threads']} threads: it will not end "
                f"exactly as an uninterrupted run (exact resume holds on the same device and thread count); "
                f"recorded in {self.PROVENANCE}")

    def where_it_ran(self) -> dict:
        """For a result's ``execution``: where the run started and, if any, its resumes elsewhere."""
        provenance = self.provenance()
        where = {"started": {key: provenance.get(key) for key in ("device", "threads")}}
        if provenance.get("resumed_elsewhere"):
            where["resumed_elsewhere"] = provenance["resumed_elsewhere"]
        return where

    def write_result(self, result: RunResult) -> None:
        atomic_write_json(self.result_file, result.to_dict())

    def records(self, name: str) -> list[dict]:
        """Records of one log (``metrics`` or ``gradstats``); a torn last line is ignored."""
        return read_jsonl(self.log_file(name))

    def append(self, records: dict[str, list[dict]]) -> None:
        for name, lines in records.items():
            append_jsonl(self.log_file(name), lines)

    def reconcile(self, epoch: int, checkpointed: dict[str, list[dict]]) -> None:
        """Make the logs agree with a checkpoint of ``epoch``, whatever instant the run died at: drop records
        past it, and restore the checkpoint's own epoch if its append was lost."""
        for name in self.LOGS:
            path = self.log_file(name)
            truncate_jsonl(path, lambda record: record["epoch"] <= epoch)
            lines = checkpointed.get(name, [])
            if lines and not any(r["epoch"] == epoch for r in read_jsonl(path)):
                append_jsonl(path, lines)

    def lock(self) -> contextlib.AbstractContextManager:
        """Held while training; raises ``store.Busy`` if another process trains this run."""
        return exclusive(self.path)

    # -- recovery -------------------------------------------------------------------------------------------
    def rebuildable(self) -> int | None:
        """The final epoch, when a corrupt result can be rebuilt without training: the stored config is this
        run's, the last checkpoint (itself, not its previous generation) is of the recipe's final epoch, the
        selected epoch's weights are there, and ``metrics.jsonl`` holds every epoch. None otherwise."""
        config = self.config()
        if config is None or config.run_id != self.run_id:
            return None
        state = read_checkpoint(self.checkpoints / "last.pt")
        progress = state.get("progress") if isinstance(state, dict) else None
        final = config.recipe.epochs
        if not isinstance(progress, dict) or progress.get("epoch") != final:
            return None
        best = progress.get("best_epoch")
        if best != final and not (self.checkpoints / f"best-{best}.pt").is_file():
            return None
        if [record.get("epoch") for record in self.records("metrics")] != list(range(1, final + 1)):
            return None
        return final

    def recovery(self) -> str:
        """What a relaunch does with this run's unreadable result (words for messages)."""
        epoch = self.rebuildable()
        return (f"rebuilds it from the run's final checkpoint (epoch {epoch}) and metrics.jsonl, without training"
                if epoch else "moves the folder aside and redoes the run")

    def move_result_aside(self) -> Path:
        """Move only an unreadable ``result.json`` to ``<table>/.aside/<run-id>.<time>.result.json`` (the run is
        about to be rebuilt from its checkpoint and logs)."""
        target = self.path.parent / ".aside" / f"{self.run_id}.{datetime.now():%Y%m%d-%H%M%S-%f}.{self.RESULT}"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.result_file.rename(target)
        return target

    def move_aside(self) -> Path:
        """Move the folder to ``<table>/.aside/<run-id>.<time>`` (kept for inspection, out of the store)."""
        target = self.path.parent / ".aside" / f"{self.run_id}.{datetime.now():%Y%m%d-%H%M%S-%f}"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path.rename(target)
        return target

    def remove(self) -> None:
        """Forget the run (``--force``)."""
        if self.path.exists():
            shutil.rmtree(self.path)


class NotAFolder(UserError):
    """A file where the results store, or a table's folder in it, should be."""


def check_store(results: Path, tables: Iterable[str] = ()) -> None:
    """Refuse a results store that is a file (or lies under one), or holds a file where a table's folder goes.

    Unchecked, a reader sees no runs (``status`` reported every run *not submitted*, exit 0) and a writer
    fails deep in a run with ``NotADirectoryError``; a store that does not exist yet is fine (runs create it).
    """
    results = Path(results)
    existing = next((p for p in (results, *results.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise NotAFolder(f"{existing} is a file, not a folder: give the results folder with --results DIR")
    for table in tables:
        if (results / table).exists() and not (results / table).is_dir():
            raise NotAFolder(f"{results / table} is a file, not a folder: the results store keeps the runs of "
                             f"table {table} in a folder of that name; move the file away or give another "
                             f"--results DIR")


def run_folders(results: Path, table: str) -> list[RunFolder]:
    """Every run folder of a table (hidden folders such as ``.slurm`` and ``.aside`` are not runs); a file in
    the table's place is refused (:func:`check_store`) rather than read as a table without runs."""
    check_store(results, [table])
    root = Path(results) / table
    return [RunFolder(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")] \
        if root.is_dir() else []


class CorruptRunFolder(RunFolder):
    """A run folder whose ``result.json`` is unreadable, carrying why, so callers need not read it again."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path)
        self.reason = reason  # the CorruptResult message: one line naming the file


def runs(results: Path, table: str) -> tuple[list[RunResult], list[CorruptRunFolder]]:
    """The finished runs of a table, and the folders whose result is corrupt (each with its reason)."""
    finished, corrupt = [], []
    for folder in run_folders(results, table):
        if not folder.result_file.is_file():
            continue
        try:
            finished.append(folder.result())
        except CorruptResult as error:
            corrupt.append(CorruptRunFolder(folder.path, str(error)))
    return finished, corrupt


# -- the pandas API -------------------------------------------------------------------------------------------
def _flatten(result: RunResult) -> dict:
    config = result.config
    row = {
        "table": result.table, "row": result.row, "label": result.label, "kind": result.kind,
        "run_id": result.run_id, "model": config.model.name, "dataset": config.model.dataset,
        "sharing_depth": config.model.sharing_depth, "unshared_bn": config.model.unshared_bn,
        "data": "synthetic" if config.synthetic else config.data, "profile": config.profile,
        "protocol": config.protocol, "seed": config.seed, "orthogonality": config.training.orthogonality,
        "precision": config.training.precision, "epochs": config.recipe.epochs,
        "overrides": describe_overrides(config.overrides) or None, "params": result.params,
        "macs": result.macs, "wall_time_s": result.wall_time_s, "device": result.provenance.get("device"),
        "commit": result.provenance.get("code", {}).get("commit"),
    }
    for stage in ("selected", "best", "final"):
        for key, value in getattr(result, stage).to_dict().items():
            row[f"{stage}_{key}"] = value
    return row


def load(results: Path = DEFAULT_RESULTS, table: str | None = None) -> pd.DataFrame:
    """One row per finished run, optionally of one table (corrupt results are left out: see :func:`runs`)."""
    root = Path(results)
    tables = [table] if table else sorted(p.name for p in root.iterdir()
                                         if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    return pd.DataFrame([_flatten(r) for name in tables for r in runs(root, name)[0]])


def load_metrics(run_dir: Path) -> pd.DataFrame:
    """Per-epoch metrics of one run (finished or not)."""
    return pd.DataFrame(RunFolder(run_dir).records("metrics"))


def load_gradstats(run_dir: Path) -> pd.DataFrame:
    """Shared-basis gradient statistics of one run: epoch, batch, basis, mean_abs, max_abs, l2."""
    return pd.DataFrame(RunFolder(run_dir).records("gradstats"))


# -- provenance -----------------------------------------------------------------------------------------------
def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> dict:
    """The git commit of the code and whether the code (not the suite's outputs) differs from it."""
    commit = _git("rev-parse", "HEAD")
    excluded = [f":(exclude){path}" for path in OUTPUTS]
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)) if commit else None
    return {"commit": commit or "unknown", "dirty": dirty}


def provenance(device: str) -> dict:
    """What produced a run: code version, package versions, host, hardware, threads and command line."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "code": code_version(),
        "packages": versions,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        "threads": torch.get_num_threads(),
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def device_name(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

