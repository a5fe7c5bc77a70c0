"""What a figure is drawn from, read once and hashed; and the manifest that records those hashes.

A figure reads everything through one :class:`Inputs`: the results it plots (as analysis parsed them), the
logs of the runs (bytes read once, then parsed), the specs that feed it and the package data behind the
published numbers and model sizes. The digest of exactly those bytes is stored in ``manifest.json`` beside the
digest of the figure's own code (its module, ``style`` and this module), so ``--check`` notices a changed
result, log, spec, published number or drawing without drawing anything.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Iterator

from .. import spec as specs
from ..analysis import Collected, RowResult, collect, run_folders_of
from ..config import PROFILES, Setting
from ..results import RunFolder, RunResult, run_folders
from ..atomic import parse_jsonl

MANIFEST = "manifest.json"
PACKAGE_DATA = ("data/published.yaml", "data/complexity.csv")


class Inputs:
    """The bytes one figure is drawn from, by key: the same bytes feed the drawing and the digest."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self.files: dict[str, bytes] = {}

    def _key(self, path: Path) -> str:
        path = Path(path)
        try:
            return path.relative_to(self.results).as_posix()
        except ValueError:
            return path.as_posix()

    def records(self, folder: RunFolder, log: str) -> list[dict]:
        """One log of a run (``metrics``, ``gradstats``), read once; a missing log is empty (and hashed so)."""
        path = folder.log_file(log)
        key = self._key(path)
        if key not in self.files:
            self.files[key] = path.read_bytes() if path.is_file() else b""
        return parse_jsonl(self.files[key])

    def result(self, folder: RunFolder, run: RunResult) -> RunResult:
        """A finished run as analysis read it: its content (canonical JSON) is what is hashed."""
        self.files[self._key(folder.result_file)] = json.dumps(run.to_dict(), sort_keys=True).encode()
        return run

    def results_of(self, table: specs.TableSpec, rows: Iterable[RowResult]) -> None:
        for row in rows:
            for folder, run in run_folders_of(table, self.results, row):
                self.result(folder, run)
            if row.released is not None:
                self.result(RunFolder(self.results / table.name / row.released.run_id), row.released)

    def spec(self, table: specs.TableSpec) -> None:
        key = f"spec:{table.name}" if table.shipped else f"spec:{table.path.as_posix()}"
        self.files[key] = table.path.read_bytes()

    def package_data(self) -> None:
        """The published numbers and the committed model sizes (what ``published`` and ``complexity`` read)."""
        for name in PACKAGE_DATA:
            item = resources.files("replicate").joinpath(name)
            self.files[f"package:replicate/{name}"] = item.read_bytes() if item.is_file() else b""

    def digest(self) -> str:
        digest = hashlib.sha256()
        for key in sorted(self.files):
            content = self.files[key]
            digest.update(f"{key}\n{len(content)}\n".encode())
            digest.update(content)
        return digest.hexdigest()


def source(module: ModuleType) -> bytes:
    """The source of a module as it is on disk."""
    return Path(module.__file__).read_bytes()


@functools.cache
def _shared_source(path: str) -> bytes:
    """The source of a module every figure's digest includes, read once per process, not once per figure."""
    return Path(path).read_bytes()


def code_digest(module: ModuleType) -> str:
    """A figure's code: its own module, the shared style and this module (what reads its inputs)."""
    from . import style

    digest = hashlib.sha256()
    for part in (module, style, sys.modules[__name__]):
        content = source(part) if part is module else _shared_source(part.__file__)
        digest.update(f"{part.__name__}\n{len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()


@dataclass
class Prepared:
    """A figure's data, the notes printed under its title, and the inputs it was computed from."""

    name: str
    inputs: Inputs
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Context:
    """One invocation's view of the results: the specs and, collected once per table, their row results."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self._specs: dict[str, specs.TableSpec] = {}
        self._collected: dict[str, Collected] = {}
        self.corrupt: dict[RunFolder, str] = {}  # folder -> one-line reason, in the order found

    def inputs(self) -> Inputs:
        return Inputs(self.results)

    def spec(self, table: str) -> specs.TableSpec:
        if table not in self._specs:
            self._specs[table] = specs.load(table)
        return self._specs[table]

    def begin(self, figure: str) -> tuple[Prepared, list[specs.TableSpec]]:
        """A figure's start: its :class:`Prepared`, with the package data and the specs of its tables read."""
        prepared = Prepared(figure, self.inputs())
        prepared.inputs.package_data()
        tables = self.tables(figure)
        for table in tables:
            prepared.inputs.spec(table)
        return prepared, tables

    def finished(self, prepared: Prepared, table: specs.TableSpec,
                 keep: Callable[[RowResult], object] = lambda result: result.n,
                 ) -> Iterator[tuple[Setting, list[RowResult], list[RowResult]]]:
        """Per setting of ``table``: (setting, the row results ``keep`` selects, all its row results).

        The selected ones are recorded in ``prepared``'s inputs here, before the figure sees them, so that no
        figure can draw a result that its digest (and so ``--check``) misses.
        """
        for setting, rows in self.settings(table).items():
            done = [result for result in rows if keep(result)]
            prepared.inputs.results_of(table, done)
            yield setting, done, rows

    def tables(self, figure: str) -> list[specs.TableSpec]:
        """The shipped tables whose spec names ``figure`` in its ``figures:`` key, in name order."""
        return [self.spec(name) for name in specs.available() if figure in self.spec(name).figures]

    def collected(self, table: specs.TableSpec) -> Collected:
        if table.path.as_posix() not in self._collected:
            found = collect(table, self.results)
            for folder in found.corrupt:
                if folder not in self.corrupt:
                    self.corrupt[folder] = " ".join(folder.reason.split())
            self._collected[table.path.as_posix()] = found
        return self._collected[table.path.as_posix()]

    def settings(self, table: specs.TableSpec) -> dict[Setting, list[RowResult]]:
        """Row results per setting, only the settings with a finished run, real data first (see :func:`order`)."""
        found = {s: rows for s, rows in self.collected(table).settings.items() if any(r.n or r.released for r in rows)}
        return {s: found[s] for s in sorted(found, key=order)}

    def tables_with_runs(self) -> list[str]:
        """Shipped tables with at least one run folder (finished or not)."""
        return [name for name in specs.available() if run_folders(self.results, name)]

    def has_results(self) -> bool:
        """Is any run of a shipped table finished (or at least written as finished)?"""
        return any(folder.result_file.is_file() for name in specs.available()
                   for folder in run_folders(self.results, name))


def order(setting: Setting) -> tuple:
    """The paper's scale first, then real data at a smaller scale, then synthetic data."""
    names = list(PROFILES)
    profile = PROFILES.get(setting.profile)
    return (profile is None or profile.synthetic, setting.profile != "full",
            names.index(setting.profile) if profile else len(names), setting)


# -- the manifest -----------------------------------------------------------------------------------------------
def read_manifest(out: Path) -> dict[str, dict]:
    """Recorded figures by name ({} when there is no readable manifest)."""
    try:
        manifest = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    figures = manifest.get("figures") if isinstance(manifest, dict) else None
    return {k: v for k, v in figures.items() if isinstance(v, dict)} if isinstance(figures, dict) else {}


def manifest_entry(prepared: Prepared, code: str, files: list[str]) -> dict:
    return {"inputs": prepared.inputs.digest(), "code": code, "files": files,
            "read": sorted(prepared.inputs.files)}
