"""The paper's figures from stored results: ``python -m replicate.figures [--check] [--prune]``.

Writes PNG and PDF (7 in wide) into ``figures/`` under the working directory:

* ``error_vs_complexity``: top-1 error against parameters and FLOPs, the README graph (published, hollow)
  beside our seed means at the paper's scale (filled, ± 1 std).
* ``compression``: parameters saved against error change of each shared row against its original network.
* ``gradient_flow``: mean |g| and max |g| of each shared basis during training, with/without orthogonality and
  the unshared BatchNorms.
* ``sharing_depth``: error against decomposed blocks per shared basis.
* ``ablation``: the ablation as a dot plot, one line per configuration.
* ``training_curves_<table>``: evaluation error and orthogonality term per epoch, one panel per row.

Which tables feed a figure is said by the specs (their ``figures:`` key, vocabulary ``spec.FIGURES``); each
figure is one module with ``prepare(ctx) -> Prepared`` and ``draw(prepared) -> Figure``, found by
its name (:data:`FIGURES`). ``figures/manifest.json`` records per figure the digest of what it was drawn from and of its
code, so ``--check`` (which draws nothing) says which figures are stale, whatever git did to the files. A
figure file is only ever replaced by a newer drawing; files this run did not draw stay unless ``--prune``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Callable

from .. import spec as specs
from ..errors import UserError
from ..atomic import atomic_write_bytes, atomic_write_json
from . import style, training_curves
from .inputs import MANIFEST, Context, Prepared, code_digest, manifest_entry, read_manifest

# The figures the specs may name, in the order of their vocabulary (``spec.FIGURES``, its one owner), each drawn
# from every spec naming it: the module of the same name in this package, so a new figure is its module plus
# its name in that vocabulary.
FIGURES: dict[str, ModuleType] = {name: import_module(f"{__name__}.{name}") for name in specs.FIGURES}
FORMATS = style.FORMATS

__all__ = ["FIGURES", "FORMATS", "MANIFEST", "Context", "FigureError", "FigureJob", "Prepared", "check", "figure_jobs",
           "render"]


class FigureError(UserError):
    """Options the figures cannot be drawn from; the message says what to fix."""


@dataclass(frozen=True)
class FigureJob:
    """One figure file set to draw: its name, its module and how to prepare it."""

    name: str
    module: ModuleType
    prepare: Callable[[Context], Prepared]

    @property
    def code(self) -> str:
        return code_digest(self.module)

    def files(self, out: Path) -> list[Path]:
        return files(out, self.name)


def files(out: Path, name: str) -> list[Path]:
    """The files of one figure: PNG and PDF."""
    return [Path(out) / f"{name}.{fmt}" for fmt in FORMATS]


def figure_jobs(ctx: Context, curves: list[str] | None = None) -> list[FigureJob]:
    """The fixed figures and the training curves of ``curves`` (default: every table with runs)."""
    fixed = [FigureJob(name, module, module.prepare) for name, module in FIGURES.items()]
    tables = curves if curves else ctx.tables_with_runs()
    if not tables:
        return fixed + [FigureJob(training_curves.name_of(None), training_curves, training_curves.prepare)]
    return fixed + [FigureJob(training_curves.name_of(ctx.spec(t).name), training_curves,
                         partial(training_curves.prepare, table=t)) for t in tables]


def _validate(results: Path, out: Path) -> None:
    if not results.exists():
        raise FigureError(f"--results {results} does not exist: give the folder the runs wrote "
                          f"(python -m replicate.run writes results/ by default)")
    if not results.is_dir():
        raise FigureError(f"--results {results} is a file: give the results folder")
    if out.exists() and not out.is_dir():
        raise FigureError(f"--out {out} is a file: give a folder for the figures")


def _report(ctx: Context, results: Path) -> None:
    """What the figures could not use, on stderr: corrupt results, or no results at all."""
    for reason in ctx.corrupt.values():
        print(f"warning: {reason}; the figures treat that run as not run", file=sys.stderr)
    if not ctx.has_results():
        print(f"note: {results} holds no finished runs: the figures show the published numbers only",
              file=sys.stderr)


def render(results: Path, out: Path, curves: list[str] | None = None, progress: bool = True,
           prune: bool = False, look: str = "report", say=print) -> list[Path]:
    """Draw every figure into ``out`` (PNG + PDF) and record what each was drawn from in the manifest.

    ``look="paper"``: single-column figures, each with ``<name>.caption.md`` beside it (its title, notes and
    what it lacks); a figure without data is not drawn, and ``say`` tells which and why. Returns the files written. Figures of an earlier run that this one did not draw (e.g. the training curves
    of a table whose runs are gone) are left alone, and kept in the manifest, unless ``prune``: then their
    files are removed (each printed).
    """
    import matplotlib as mpl
    from tqdm import tqdm

    results, out = Path(results), Path(out)
    _validate(results, out)
    ctx = Context(results)
    chosen = figure_jobs(ctx, curves)  # every spec is loaded (and checked) before anything is written
    written, entries = [], {}
    with style.use(look), mpl.rc_context(style.rc()):
        for job in tqdm(chosen, desc="figures", unit="figure", leave=False, disable=None if progress else True):
            prepared = job.prepare(ctx)
            try:
                encoded = style.encode(job.module.draw(prepared))
            except style.NoData as reason:
                style.take_caption()
                say(f"not drawn for the paper: {reason}")
                entries[job.name] = {**manifest_entry(prepared, job.code, []), "skipped": str(reason)}
                continue
            for path in job.files(out):
                atomic_write_bytes(path, encoded[path.suffix[1:]])
                written.append(path)
            names = [p.name for p in job.files(out)]
            caption = style.take_caption()
            if look == "paper":
                path = out / f"{job.name}.caption.md"
                atomic_write_bytes(path, caption_text(caption).encode())
                written.append(path)
                names.append(path.name)
            entries[job.name] = manifest_entry(prepared, job.code, names)
    _report(ctx, results)
    for name, entry in read_manifest(out).items():
        if name in entries:
            continue
        if not prune:
            entries[name] = entry
            continue
        for path in files(out, name):  # only a figure's own files, whatever the manifest says
            if path.name in entry.get("files", []) and path.is_file():
                path.unlink()
                print(f"removed {path}")
    atomic_write_json(out / MANIFEST, {"figures": dict(sorted(entries.items()))})
    written.append(out / MANIFEST)
    return written


def caption_text(lines: list[str]) -> str:
    """The caption file of a paper figure: its title as a heading, then one paragraph per note."""
    if not lines:
        return ""
    sentences = [line[0].upper() + line[1:] + ("" if line.endswith(".") else ".") for line in lines[1:] if line]
    return "\n\n".join([f"**{lines[0]}.**", *sentences]) + "\n"


def check(results: Path, out: Path, curves: list[str] | None = None) -> list[str]:
    """One line per figure that is missing or older than its inputs or code (empty: all up to date).

    Draws nothing: each figure's inputs are read and hashed, and compared with the manifest.
    """
    results, out = Path(results), Path(out)
    _validate(results, out)
    ctx = Context(results)
    recorded = read_manifest(out)
    stale = []
    for job in figure_jobs(ctx, curves):
        entry = recorded.get(job.name)
        files_of = [out / name for name in entry["files"]] if entry and "skipped" in entry else job.files(out)
        missing = [f.name for f in files_of if not f.is_file() or f.stat().st_size == 0]
        where = out / job.name
        if missing:
            stale.append(f"{where}: missing {', '.join(missing)}")
        elif entry is None:
            stale.append(f"{where}: not in {out / MANIFEST} (drawn by another version, or never)")
        elif "code" not in entry:
            stale.append(f"{where}: drawn by an older version of the figures (no code digest in the manifest)")
        elif entry.get("code") != job.code:
            stale.append(f"{where}: its drawing code changed since it was drawn")
        elif entry.get("inputs") != job.prepare(ctx).inputs.digest():
            stale.append(f"{where}: its inputs (results, logs, specs or published data) changed since it was drawn")
    return stale
