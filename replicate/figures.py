"""Regenerate the paper's figures from stored results: ``python -m replicate.figures [--check]``.

Writes PNG and PDF into ``figures/`` (repository root):

* ``error_vs_complexity`` — the CIFAR-100 graph of the README at f98cd9d (SPEC §6.4): test error against
  parameters and against FLOPs (2 x MACs), the original ResNets and the ResNet34 rank sweeps; published
  points (hollow) beside ours (filled, mean ± std over seeds, full profile only).
* ``compression`` — parameters saved against error change of each shared model relative to the original
  network of its table (tables 1-3 and the rank sweep).
* ``gradient_flow`` — mean |g| and max |g| of each shared basis during training, with/without orthogonality
  and with/without the unshared BatchNorms (SPEC §5): the ``gradnorm`` runs, else the ``ablation`` runs that
  logged gradient statistics.
* ``depth_and_ablation`` — error against sharing depth (``depth``) and the ablation as grouped bars.
* ``training_curves_<table>`` — evaluation error and orthogonality term per epoch, one figure per table.

Only full-profile runs on the paper's dataset are set beside published numbers; the other figures draw every
(profile, protocol) present and say which. ``figures/manifest.json`` records, for each figure, a hash of the
files it was drawn from (result.json, metrics.jsonl, gradstats.jsonl, the table specs, the published data)
and of the figure code version; ``--check`` recomputes it, so staleness survives a git checkout.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from . import published
from . import spec as specs
from .analysis import RowResult, collect, default_claims, run_dirs
from .complexity import lookup
from .config import PROFILES, RunConfig
from .errors import UserError, cli
from .plan import image_counts, run_config
from .store import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:  # matplotlib is imported only when drawing: --check stays fast
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURES_VERSION = "1"  # bump when a figure's drawing changes: every figure becomes stale
DEFAULT_OUT = specs.TABLES_DIR.parent / "figures"
MANIFEST = "manifest.json"
FORMATS = ("png", "pdf")
DPI = 200
GRAPH_SOURCE = "f98cd9d-graph"
COMPRESSION_TABLES = ("table1", "table2", "table3", "rank")
GRADIENT_TABLES = ("gradnorm", "ablation")  # the first with gradient statistics is drawn
PROFILE_PREFERENCE = ("full", "mini", "smoke")  # real data first
PACKAGE_DATA = ("data/published.yaml", "data/complexity.csv")
WIDTH = 7.0  # inches: a two-column figure; fonts stay >= 8 pt at this width


class FigureError(UserError):
    """Results or options the figures cannot be drawn from; the message says what to fix."""


# -- inputs: what a figure is drawn from, read once and hashed ------------------------------------------------
@dataclass
class Inputs:
    """The files one figure is drawn from. Their bytes feed both the drawing and the manifest hash."""

    results: Path
    files: dict[str, bytes] = field(default_factory=dict)  # path relative to results, spec:..., package:...

    def read(self, path: Path) -> bytes:
        path = Path(path)
        key = path.relative_to(self.results).as_posix()
        if key not in self.files:
            self.files[key] = path.read_bytes() if path.is_file() else b""
        return self.files[key]

    def jsonl(self, path: Path) -> list[dict]:
        """Records of a JSON-lines file (a torn last line, being appended right now, is ignored)."""
        records = []
        for line in self.read(path).decode().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def spec(self, table: specs.TableSpec) -> None:
        self.files[f"spec:{table.path.name}"] = table.path.read_bytes()

    def package_data(self) -> None:
        for name in PACKAGE_DATA:
            item = resources.files("replicate").joinpath(name)
            self.files[f"package:replicate/{name}"] = item.read_bytes() if item.is_file() else b""

    def results_of(self, table: specs.TableSpec, row_results: list[RowResult]) -> None:
        for result in row_results:
            for directory in run_dirs(table, self.results, result):
                self.read(directory / "result.json")

    def digest(self) -> str:
        digest = hashlib.sha256(f"figures-version {FIGURES_VERSION}\n".encode())
        for key in sorted(self.files):
            content = self.files[key]
            digest.update(f"{key}\n{len(content)}\n".encode())
            digest.update(content)
        return digest.hexdigest()


@dataclass(frozen=True)
class Run:
    """One run folder (finished or still training) matched to the row it belongs to."""

    table: str
    row: specs.Row
    profile: str
    protocol: str
    seed: int
    data: str
    model: str
    directory: Path
    config: dict

    @property
    def finished(self) -> bool:
        return (self.directory / "result.json").is_file()

    @property
    def setting(self) -> tuple[str, str]:
        return self.profile, self.protocol


class Context:
    """The results folder and, loaded once per invocation, the specs and the runs matched to their rows."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self._specs: dict[str, specs.TableSpec] = {}
        self._collected: dict[str, dict] = {}
        self._runs: dict[str, list[Run]] = {}

    def inputs(self) -> Inputs:
        return Inputs(self.results)

    def spec(self, name: str) -> specs.TableSpec:
        if name not in self._specs:
            self._specs[name] = specs.load(name)
        return self._specs[name]

    def collected(self, name: str) -> dict[tuple[str, str], list[RowResult]]:
        """Finished runs per (profile, protocol) and row, as the tables see them."""
        if name not in self._collected:
            try:
                self._collected[name] = collect(self.spec(name), self.results)
            except (json.JSONDecodeError, KeyError) as error:
                bad = _bad_result(self.results / self.spec(name).name)
                raise FigureError(f"{bad}: not a result.json the engine wrote ({type(error).__name__}: {error}); "
                                  f"delete that run folder and rerun it") from None
        return self._collected[name]

    def with_runs(self, name: str) -> dict[tuple[str, str], list[RowResult]]:
        """Like :meth:`collected`, without the settings in which no row has a finished run."""
        return {k: rows for k, rows in self.collected(name).items() if any(r.n for r in rows)}

    def runs(self, name: str) -> list[Run]:
        """Every run folder of a table with a config, finished or not, matched to its row by run id."""
        if name not in self._runs:
            table = self.spec(name)
            ids: dict[tuple, dict[str, specs.Row]] = {}
            found = []
            for directory in sorted((self.results / table.name).glob("*/config.json")):
                directory = directory.parent
                try:
                    config = json.loads((directory / "config.json").read_text())
                    key = (config["profile"], config["protocol"], config["seed"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a folder being created right now, or not a run: nothing to draw from it
                if key[0] not in PROFILES:
                    continue
                if key not in ids:
                    ids[key] = {}
                    for row in table.rows:
                        profile = PROFILES[key[0]]
                        if profile.data is None or row.dataset == "cifar10":
                            ids[key][run_config(row, profile, key[2], key[1]).run_id] = row
                row = ids[key].get(directory.name)
                if row is not None:
                    data = "synthetic" if config.get("synthetic") else config.get("data", row.dataset)
                    found.append(Run(table.name, row, key[0], key[1], key[2], data, config["model"],
                                     directory, config))
            self._runs[name] = found
        return self._runs[name]

    def tables_with_runs(self) -> list[str]:
        return [name for name in specs.available() if self.runs(name)]


def _bad_result(folder: Path) -> Path:
    for path in sorted(folder.glob("*/result.json")):
        try:
            data = json.loads(path.read_text())
            data["run_id"], data["config"]["profile"], data["config"]["protocol"], data["config"]["seed"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return path
    return folder


def _setting_order(setting: tuple[str, str]) -> tuple:
    profile, protocol = setting
    order = PROFILE_PREFERENCE.index(profile) if profile in PROFILE_PREFERENCE else len(PROFILE_PREFERENCE)
    return order, protocol


def setting_label(profile: str, protocol: str, data: str | None = None) -> str:
    return f"{profile} profile, {protocol} protocol" + (f", {data}" if data else "")


# -- figure 1: error vs complexity (the CIFAR-100 graph) ------------------------------------------------------
SERIES = ("Original ResNet", "ResNet34-S16Uu", "ResNet34-S32Uu", "ResNet34-SsU1")
SWEEP = re.compile(r"^ResNet34-S(\d+)U(\d+)$")


def series_of(model: str) -> list[str]:
    """The graph's series a model belongs to (the u = 1 points lie on two)."""
    if model in ("ResNet18", "ResNet34", "ResNet50"):
        return ["Original ResNet"]
    match = SWEEP.match(model)
    if not match:
        return []
    shared, unique = int(match.group(1)), int(match.group(2))
    found = [f"ResNet34-S{shared}Uu"] if shared in (16, 32) else []
    return found + (["ResNet34-SsU1"] if unique == 1 else [])


def complexity_frame(ctx: Context, inputs: Inputs | None = None) -> pd.DataFrame:
    """The points of figure 1: published (graph) and ours (full profile, mean ± std over seeds)."""
    inputs = inputs or ctx.inputs()
    records = []
    for entry in published.load():
        if entry.source != GRAPH_SOURCE or entry.top1_err is None:
            continue
        counts = lookup(entry.model, entry.dataset)
        for series in series_of(entry.model):
            records.append({"series": series, "model": entry.model, "label": entry.label, "source": "published",
                            "setting": "", "protocol": "", "params_M": counts.params / 1e6,
                            "flops_G": 2 * counts.macs / 1e9,
                            "err": entry.top1_err, "err_std": 0.0, "n": 0})
    table = ctx.spec("rank")
    inputs.spec(table)
    for (profile, protocol), rows in ctx.collected("rank").items():
        if profile != "full":
            continue  # the graph is full-profile CIFAR-100: nothing else is comparable with it
        done = [r for r in rows if r.n and r.data == r.row.dataset]
        inputs.results_of(table, done)
        for result in done:
            for series in series_of(result.row.model):
                records.append({"series": series, "model": result.row.model, "label": result.row.label,
                                "source": "ours", "setting": setting_label(profile, protocol),
                                "protocol": protocol,
                                "params_M": result.params / 1e6, "flops_G": 2 * result.macs / 1e9,
                                "err": result.mean(), "err_std": result.std(), "n": result.n})
    columns = ["series", "model", "label", "source", "setting", "protocol", "params_M", "flops_G", "err",
               "err_std", "n"]
    return pd.DataFrame(records, columns=columns)


@dataclass
class Prepared:
    """A figure's data, the notes to print on it, and the inputs it was computed from."""

    name: str
    inputs: Inputs
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def prepare_error_vs_complexity(ctx: Context) -> Prepared:
    inputs = ctx.inputs()
    inputs.package_data()
    points = complexity_frame(ctx, inputs)
    ours = points[points.source == "ours"]
    notes = []
    if ours.empty:
        others = [setting_label(*k) for k in ctx.with_runs("rank") if k[0] != "full"]
        notes.append("no reproduced runs yet: run python -m replicate.run rank (full profile)"
                     + (f"; not comparable, not drawn: {'; '.join(others)}" if others else ""))
    else:
        total = points[points.source == "published"].model.nunique()
        if ours.model.nunique() < total:
            notes.append(f"reproduced {ours.model.nunique()} of {total} points so far")
    return Prepared("error_vs_complexity", inputs, {"points": points}, notes)


MARKERS = {"Original ResNet": "o", "ResNet34-S16Uu": "s", "ResNet34-S32Uu": "^", "ResNet34-SsU1": "D"}
PROTOCOL_STYLE = {"paper": "-", "clean": "-."}


def draw_error_vs_complexity(prepared: Prepared) -> Figure:
    from matplotlib.lines import Line2D

    points = prepared.data["points"]
    fig, axes = _figure(1, 2, (WIDTH, 3.3))
    colours = _palette()
    for ax, (column, xlabel) in zip(axes, [("params_M", "parameters (M)"),
                                          ("flops_G", "FLOPs (G, = 2 × MACs)")]):
        for index, series in enumerate(SERIES):
            colour, marker = colours[index], MARKERS[series]
            mine = points[points.series == series].sort_values(column)
            paper = mine[mine.source == "published"]
            ax.plot(paper[column], paper.err, ls="--", lw=0.9, color=colour, marker=marker, ms=5,
                    mfc="white", mec=colour, mew=1.1, zorder=2)
            for _, ours in mine[mine.source == "ours"].groupby("setting", sort=True):
                style = PROTOCOL_STYLE.get(ours.protocol.iloc[0], "-")
                ax.errorbar(ours[column], ours.err, yerr=ours.err_std, ls=style, lw=1.2, color=colour,
                            marker=marker, ms=5, mec=colour, capsize=2, elinewidth=0.8, zorder=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 test error (%)")
    handles = [Line2D([], [], color=colours[i], marker=MARKERS[s], ls="-", label=s) for i, s in enumerate(SERIES)]
    handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="--",
                          label="published (README graph at f98cd9d)"))
    ours = points[points.source == "ours"]
    for setting in sorted(ours.setting.unique()):
        counts = ours[ours.setting == setting].n
        seeds = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}–{counts.max()}"
        style = PROTOCOL_STYLE.get(ours[ours.setting == setting].protocol.iloc[0], "-")
        handles.append(Line2D([], [], color="0.3", marker="o", ls=style,
                              label=f"ours: {setting} (mean ± std, {seeds} seeds)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    _title(fig, "CIFAR-100: error against model size and cost", prepared.notes)
    return fig


# -- figure 2: parameters saved vs error change ---------------------------------------------------------------
TABLE_NAMES = {"table1": "Table 1", "table2": "Table 2", "table3": "Table 3", "rank": "rank sweep"}


def compression_frame(ctx: Context, inputs: Inputs | None = None) -> pd.DataFrame:
    """One point per (shared row, its baseline) pair: published where both errors were printed, and ours."""
    inputs = inputs or ctx.inputs()
    records = []
    for name in COMPRESSION_TABLES:
        table = ctx.spec(name)
        inputs.spec(table)
        pairs = [(c.row, c.than) for c in default_claims(table)]
        by_id = {r.id: r for r in table.rows}
        for row_id, base_id in pairs:
            row, base = by_id[row_id], by_id[base_id]
            if row.published and base.published and None not in (row.published.top1_err, base.published.top1_err):
                saved = 1 - lookup(row.model, row.dataset).params / lookup(base.model, base.dataset).params
                records.append(_pair(name, row, base, "published", "", 100 * saved,
                                     row.published.top1_err - base.published.top1_err, 0.0, 0))
        for (profile, protocol), rows in ctx.collected(name).items():
            if profile != "full":
                continue
            results = {r.row.id: r for r in rows if r.n and r.data == r.row.dataset}
            for row_id, base_id in pairs:
                if row_id in results and base_id in results:
                    a, b = results[row_id], results[base_id]
                    inputs.results_of(table, [a, b])
                    records.append(_pair(name, a.row, b.row, "ours", setting_label(profile, protocol),
                                         100 * (1 - a.params / b.params), a.mean() - b.mean(),
                                         math.hypot(a.std(), b.std()), min(a.n, b.n)))
    columns = ["table", "dataset", "label", "baseline", "source", "setting", "saved_pct", "delta_err",
               "delta_std", "n"]
    return pd.DataFrame(records, columns=columns)


def _short(label: str) -> str:
    """ResNet34-S16U2 -> S16U2: the family is in the legend."""
    return label.split("-", 1)[1] if "-" in label else label


def _pair(table, row, base, source, setting, saved, delta, std, n) -> dict:
    return {"table": table, "dataset": row.dataset, "label": row.label, "baseline": base.label,
            "source": source, "setting": setting, "saved_pct": saved, "delta_err": delta, "delta_std": std,
            "n": n}


def prepare_compression(ctx: Context) -> Prepared:
    inputs = ctx.inputs()
    inputs.package_data()
    points = compression_frame(ctx, inputs)
    notes = []
    if (points.source == "ours").sum() == 0:
        notes.append("no reproduced pairs yet (a shared row and its baseline, full profile): run python -m "
                     f"replicate.run {COMPRESSION_TABLES[-1]} (or {', '.join(COMPRESSION_TABLES[:-1])})")
    datasets = {name: ctx.spec(name).rows[0].dataset for name in COMPRESSION_TABLES}
    return Prepared("compression", inputs, {"points": points, "datasets": datasets}, notes)


TABLE_MARKERS = {"table1": "o", "table2": "s", "table3": "^", "rank": "D"}
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}


def draw_compression(prepared: Prepared) -> Figure:
    from matplotlib.lines import Line2D

    points = prepared.data["points"]
    fig, (ax,) = _figure(1, 1, (WIDTH, 3.0))
    colours = _palette()
    ax.axhline(0, color="0.4", lw=0.8, zorder=1)
    handles = []
    for index, name in enumerate(COMPRESSION_TABLES):
        colour, marker = colours[index], TABLE_MARKERS[name]
        mine = points[points.table == name]
        paper, ours = mine[mine.source == "published"], mine[mine.source == "ours"]
        ax.scatter(paper.saved_pct, paper.delta_err, marker=marker, s=28, facecolors="white",
                   edgecolors=colour, linewidths=1.1, zorder=2)
        if not ours.empty:
            ax.errorbar(ours.saved_pct, ours.delta_err, yerr=ours.delta_std, ls="none", marker=marker, ms=5,
                        color=colour, capsize=2, elinewidth=0.8, zorder=3)
        for label, group in pd.concat([ours, paper]).groupby("label", sort=False):
            if len(group) > 1:  # ours and published of one model: a thin link shows how far apart they are
                ax.plot(group.saved_pct, group.delta_err, ls=":", lw=0.7, color=colour, zorder=1)
            point = group.iloc[0]  # one label per model, on our point when there is one
            ax.annotate(_short(label), (point.saved_pct, point.delta_err), xytext=(3, 2),
                        textcoords="offset points", fontsize=8, color=colour)
        dataset = DATASETS.get(prepared.data["datasets"][name], "")
        handles.append(Line2D([], [], ls="none", marker=marker, color=colour,
                              label=f"{TABLE_NAMES[name]} ({dataset})"))
    handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="0.3", color="0.3",
                          label="published (README / graph, f98cd9d)"))
    handles.append(Line2D([], [], ls="none", marker="o", color="0.3", label="ours, full profile (± std)"))
    ax.set_xlabel("parameters saved vs. the original network (%)")
    ax.set_ylabel("error change (points)\n< 0: lower error than original")
    if points.empty:
        ax.set_xlim(0, 100)
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    _title(fig, "Compression against accuracy: each shared model vs. the original network of its table",
           prepared.notes)
    return fig


# -- figure 3: gradient flow ----------------------------------------------------------------------------------
def gradient_source(ctx: Context) -> tuple[str, tuple[str, str], str, str, list[Run]] | None:
    """(table, setting, data, model, runs): the gradnorm runs, else the ablation runs, with statistics.

    Of the settings present, full first (then mini, smoke); of the models, the one logged under the most
    (orthogonality, unshared BN) conditions, so that the four configurations of SPEC §5 sit side by side.
    """
    for name in GRADIENT_TABLES:
        logged = [r for r in ctx.runs(name) if _nonempty(r.directory / "gradstats.jsonl")]
        if not logged:
            continue
        setting = min({r.setting for r in logged}, key=_setting_order)
        chosen = [r for r in logged if r.setting == setting]
        groups: dict[tuple[str, str], list[Run]] = {}
        for run in chosen:
            groups.setdefault((run.data, run.model), []).append(run)
        rows = ctx.spec(name).rows
        (data, model), runs = max(groups.items(), key=lambda item: (
            len({(r.row.orthogonality, r.row.unshared_bn) for r in item[1]}),
            -min(rows.index(r.row) for r in item[1])))  # ties: the group whose first row comes first
        return name, setting, data, model, runs
    return None


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def condition(orthogonality: bool, unshared_bn: bool) -> str:
    return (f"{'with' if orthogonality else 'without'} orthogonality, "
            f"{'with' if unshared_bn else 'without'} unshared BN")


CONDITIONS = [condition(o, b) for o in (True, False) for b in (True, False)]


def gradient_frame(runs: list[Run], inputs: Inputs) -> pd.DataFrame:
    """Per condition, basis and logged step: mean |g| and max |g| averaged over seeds."""
    frames = []
    for run in runs:
        stats = pd.DataFrame(inputs.jsonl(run.directory / "gradstats.jsonl"))
        if stats.empty:
            continue
        config = RunConfig.from_dict(run.config)
        batches = max(1, math.ceil(image_counts(config)[0] / config.recipe.batch_size))
        stats["step"] = stats["epoch"] - 1 + stats["batch"] / batches
        stats["condition"] = condition(run.row.orthogonality, run.row.unshared_bn)
        stats["row"] = run.row.id
        stats["seed"] = run.seed
        frames.append(stats)
    if not frames:
        return pd.DataFrame(columns=["condition", "basis", "step", "mean_abs", "max_abs", "seeds"])
    stats = pd.concat(frames, ignore_index=True)
    grouped = stats.groupby(["condition", "basis", "step"], sort=True)
    return grouped.agg(mean_abs=("mean_abs", "mean"), max_abs=("max_abs", "mean"),
                       seeds=("seed", "nunique")).reset_index()


def prepare_gradient_flow(ctx: Context) -> Prepared:
    inputs = ctx.inputs()
    for name in GRADIENT_TABLES:
        inputs.spec(ctx.spec(name))
    source = gradient_source(ctx)
    if source is None:
        return Prepared("gradient_flow", inputs, {"placeholder": "gradnorm"})
    name, (profile, protocol), data, model, runs = source
    frame = gradient_frame(runs, inputs)
    notes = []
    if name != "gradnorm":
        notes.append(f"gradnorm table not run yet (python -m replicate.run gradnorm): {name} runs shown")
    missing = [c for c in CONDITIONS if c not in set(frame.condition)]
    if missing:
        notes.append("not run yet: " + "; ".join(missing))
    seeds = sorted({r.seed for r in runs})
    title = (f"Shared-basis gradients, {model} ({name} table; {profile} profile, {protocol} protocol, {data}; "
             f"mean of {len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    return Prepared("gradient_flow", inputs, {"frame": frame, "title": title}, notes)


CONDITION_STYLE = {c: (i, "-" if "with unshared" in c else "--") for i, c in enumerate(CONDITIONS)}


def draw_gradient_flow(prepared: Prepared) -> Figure:
    if "placeholder" in prepared.data:
        return _placeholder_figure("Shared-basis gradient flow", prepared.data["placeholder"])
    frame = prepared.data["frame"]
    bases = sorted(frame.basis.unique(), key=_natural)
    fig, axes = _figure(2, max(1, len(bases)), (WIDTH, 4.4), sharex=True, sharey="row", squeeze=False)
    colours = _palette()
    for column, basis in enumerate(bases):
        for line, (statistic, label) in enumerate([("mean_abs", "mean |g|"), ("max_abs", "max |g|")]):
            ax = axes[line][column]
            for name, group in frame[frame.basis == basis].groupby("condition", sort=False):
                colour, style = CONDITION_STYLE[name]
                values = group[statistic].where(group[statistic] > 0)
                ax.plot(group.step, values, ls=style, lw=1.0, color=colours[colour], label=name)
            ax.set_yscale("log")
            if line == 0:
                ax.set_title(basis)
            else:
                ax.set_xlabel("epochs trained")
            if column == 0:
                ax.set_ylabel(label)
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    order = sorted(range(len(labels)), key=lambda i: CONDITIONS.index(labels[i]))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center", ncol=2,
               frameon=False)
    _title(fig, prepared.data["title"], prepared.notes)
    return fig


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


# -- figure 4: sharing depth and the ablation -----------------------------------------------------------------
DEPTHS = {"depth-1": "1", "depth-2": "2", "depth-4": "4", "depth-all": "all"}


def depth_frame(ctx: Context, inputs: Inputs) -> pd.DataFrame:
    table = ctx.spec("depth")
    inputs.spec(table)
    records = []
    for (profile, protocol), rows in sorted(ctx.with_runs("depth").items(), key=lambda kv: _setting_order(kv[0])):
        done = [r for r in rows if r.n]
        inputs.results_of(table, done)
        for result in done:
            records.append({"setting": setting_label(profile, protocol, result.data), "source": "ours",
                            "model": result.model,
                            "depth": DEPTHS.get(result.row.id, str(result.row.sharing_depth or "all")),
                            "err": result.mean(), "err_std": result.std(), "n": result.n})
            entry = result.row.published
            if result.comparable and entry.top1_err is not None:
                records.append({"setting": "published", "source": "published", "model": result.row.model,
                                "depth": DEPTHS.get(result.row.id, "all"), "err": entry.top1_err,
                                "err_std": 0.0, "n": 0})
    frame = pd.DataFrame(records, columns=["setting", "source", "model", "depth", "err", "err_std", "n"])
    return frame.drop_duplicates(subset=["setting", "depth"])


def ablation_frame(ctx: Context, inputs: Inputs) -> pd.DataFrame:
    table = ctx.spec("ablation")
    inputs.spec(table)
    records = []
    for (profile, protocol), rows in sorted(ctx.with_runs("ablation").items(),
                                            key=lambda kv: _setting_order(kv[0])):
        done = [r for r in rows if r.n]
        inputs.results_of(table, done)
        for result in done:
            dataset = DATASETS.get(result.row.dataset, result.row.dataset)
            data = f"{dataset} rows on {result.data}" if result.data != result.row.dataset else dataset
            entry = result.row.published
            records.append({"group": f"{data}, {profile}/{protocol}", "variant": _variant(result.row.id),
                            "order": table.rows.index(result.row), "err": result.mean(),
                            "err_std": result.std(), "n": result.n,
                            "published": entry.top1_err if result.comparable and entry.top1_err else np.nan})
    return pd.DataFrame(records, columns=["group", "variant", "order", "err", "err_std", "n", "published"])


def _variant(row_id: str) -> str:
    return re.sub(r"^c\d+-", "", row_id)


def prepare_depth_and_ablation(ctx: Context) -> Prepared:
    inputs = ctx.inputs()
    depth, ablation = depth_frame(ctx, inputs), ablation_frame(ctx, inputs)
    notes = []
    for name in ("depth", "ablation"):
        for (profile, protocol), rows in ctx.with_runs(name).items():
            done = sum(1 for r in rows if r.n)
            if done < len(rows):
                notes.append(f"{name}, {profile} profile: {done} of {len(rows)} rows run so far")
    return Prepared("depth_and_ablation", inputs, {"depth": depth, "ablation": ablation}, notes)


def draw_depth_and_ablation(prepared: Prepared) -> Figure:
    depth, ablation = prepared.data["depth"], prepared.data["ablation"]
    fig, (left, right) = _figure(1, 2, (WIDTH, 3.4), width_ratios=[1, 1.5])
    colours = _palette()
    if depth.empty:
        _placeholder(left, "depth")
    else:
        positions = {d: i for i, d in enumerate(DEPTHS.values())}
        settings = [s for s in depth.setting.unique() if s != "published"]
        for index, setting in enumerate(settings):
            mine = depth[depth.setting == setting].assign(x=lambda f: f.depth.map(positions)).sort_values("x")
            left.errorbar(mine.x, mine.err, yerr=mine.err_std, marker="o", ms=4, capsize=2, lw=1.2,
                          color=colours[index], label=f"depth, ours: {setting}")
        paper = depth[depth.source == "published"]
        if not paper.empty:
            left.scatter(paper.depth.map(positions), paper.err, marker="D", s=30, facecolors="white",
                         edgecolors="0.2", zorder=3, label="depth, published (README, f98cd9d)")
        left.set_xticks(range(len(positions)), list(positions))
        left.set_xlabel("blocks sharing one basis (sharing depth)")
        left.set_ylabel("top-1 test error (%)")
        left.set_title(f"Sharing depth ({', '.join(dict.fromkeys(depth.model))})")
    if ablation.empty:
        _placeholder(right, "ablation")
    else:
        variants = ablation.sort_values("order").variant.drop_duplicates().tolist()
        groups = list(dict.fromkeys(ablation.group))
        height = 0.8 / len(groups)
        for index, group in enumerate(groups):
            mine = ablation[ablation.group == group]
            y = np.array([variants.index(v) for v in mine.variant]) - 0.4 + height * (index + 0.5)
            right.barh(y, mine.err, height=height, xerr=mine.err_std, color=colours[index],
                       label=f"ablation, ours: {group}",
                       error_kw={"elinewidth": 0.8, "capsize": 1.5})
            known = mine.published.notna()
            if known.any():
                right.scatter(mine.published[known], y[known.to_numpy()], marker="D", s=22, facecolors="white",
                              edgecolors="0.1", zorder=3)
        if ablation.published.notna().any():
            right.scatter([], [], marker="D", s=22, facecolors="white", edgecolors="0.1",
                          label="ablation, published (README, f98cd9d)")
        right.set_yticks(range(len(variants)), variants)
        right.set_ylim(max(len(variants), 5) - 0.5, -0.5)  # top to bottom in table order; thin bars if few
        right.set_xlabel("top-1 test error (%, mean ± std)")
        right.set_title("Ablation")
    handles, labels = [], []
    for ax in (left, right):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
    _title(fig, "Sharing depth and ablation", prepared.notes)
    return fig


# -- figure 5: training curves --------------------------------------------------------------------------------
def curves_frame(runs: list[Run], inputs: Inputs, order: list[str]) -> pd.DataFrame:
    """Per-epoch evaluation error and orthogonality term of every run (finished or still training)."""
    frames = []
    for run in runs:
        if run.finished:
            inputs.read(run.directory / "result.json")
        metrics = pd.DataFrame(inputs.jsonl(run.directory / "metrics.jsonl"))
        if metrics.empty:
            continue
        metrics = metrics.reindex(columns=["epoch", "eval_top1_err", "train_ortho", "eval_split"])
        metrics["row"], metrics["seed"], metrics["order"] = run.row.id, run.seed, order.index(run.row.id)
        metrics["orthogonality"] = run.row.orthogonality
        metrics["setting"] = setting_label(run.profile, run.protocol, run.data)
        metrics["finished"] = run.finished
        frames.append(metrics)
    columns = ["epoch", "eval_top1_err", "train_ortho", "eval_split", "row", "seed", "order", "orthogonality",
               "setting", "finished"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def prepare_training_curves(ctx: Context, table: str | None) -> Prepared:
    inputs = ctx.inputs()
    if table is None:
        return Prepared("training_curves", inputs, {"placeholder": "<table>"})
    spec = ctx.spec(table)
    name = f"training_curves_{spec.name}"
    inputs.spec(spec)
    runs = sorted(ctx.runs(table), key=lambda r: _setting_order(r.setting))
    frame = curves_frame(runs, inputs, [r.id for r in spec.rows])
    if frame.empty:
        return Prepared(name, inputs, {"placeholder": table})
    running = frame[~frame.finished.astype(bool)].drop_duplicates(["setting", "row", "seed"])
    notes = [f"{len(running)} run(s) still training: their curves end at the last finished epoch"] \
        if len(running) else []
    return Prepared(name, inputs, {"frame": frame, "title": spec.title}, notes)


LINESTYLES = ("-", "--", ":", "-.")


def draw_training_curves(prepared: Prepared) -> Figure:
    from matplotlib.lines import Line2D

    if "placeholder" in prepared.data:
        return _placeholder_figure("Training curves", prepared.data["placeholder"])
    frame = prepared.data["frame"]
    settings = list(dict.fromkeys(frame.setting))
    rows = frame.sort_values("order").row.drop_duplicates().tolist()
    height = 1.2 + 2.4 * len(settings) + 0.2 * math.ceil(len(rows) / 3)
    fig, axes = _figure(len(settings), 2, (WIDTH, height), squeeze=False)
    colours = _palette()
    style = {r: (colours[i % len(colours)], LINESTYLES[(i // len(colours)) % len(LINESTYLES)])
             for i, r in enumerate(rows)}
    for line, setting in enumerate(settings):
        error_ax, ortho_ax = axes[line]
        mine = frame[frame.setting == setting]
        for row in rows:
            runs = mine[mine.row == row]
            if runs.empty:
                continue
            colour, ls = style[row]
            seeds = runs.seed.nunique()
            curve = runs.groupby("epoch").agg(err=("eval_top1_err", "mean"), std=("eval_top1_err", "std"),
                                              ortho=("train_ortho", "mean")).reset_index()
            error_ax.plot(curve.epoch, curve.err, color=colour, ls=ls, lw=1.1, label=row)
            if seeds > 1:
                error_ax.fill_between(curve.epoch, curve.err - curve["std"].fillna(0),
                                      curve.err + curve["std"].fillna(0), color=colour, alpha=0.15, lw=0)
            if runs.orthogonality.iloc[0] and (curve.ortho > 0).any():
                ortho_ax.plot(curve.epoch, curve.ortho.where(curve.ortho > 0), color=colour, ls=ls, lw=1.1)
        split = ", ".join(sorted(mine.eval_split.dropna().unique())) or "eval"
        error_ax.set_ylabel(f"top-1 error, {split} (%)")
        seeds = mine.groupby("row").seed.nunique()
        counts = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
        error_ax.set_title(f"{setting}\n{counts} seed(s) per row" + (", band ± std" if seeds.max() > 1 else ""))
        ortho_ax.set_ylabel("orthogonality term R")
        ortho_ax.set_title("orthogonality term (rows that train with it)")
        if ortho_ax.lines:
            ortho_ax.set_yscale("log")
        else:
            ortho_ax.text(0.5, 0.5, "no row with orthogonality", ha="center", va="center",
                          transform=ortho_ax.transAxes, color="0.4")
        for ax in (error_ax, ortho_ax):
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=style[r][0], ls=style[r][1], lw=1.1, label=r) for r in rows]
    fig.legend(handles=handles, loc="outside lower center", frameon=False, ncol=min(3, len(handles)))
    _title(fig, prepared.data["title"], prepared.notes)
    return fig


# -- drawing helpers ------------------------------------------------------------------------------------------
def _style() -> dict:
    import seaborn as sns
    from cycler import cycler

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper")}
    rc.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8,
               "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8,
               "figure.titlesize": 9.5, "lines.markersize": 5, "pdf.fonttype": 42, "ps.fonttype": 42,
               "axes.prop_cycle": cycler(color=sns.color_palette("colorblind"))})
    return rc


def _palette() -> list:
    import seaborn as sns

    return sns.color_palette("colorblind")


def _figure(rows: int, columns: int, size: tuple[float, float], squeeze: bool = True, **options):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    width_ratios = options.pop("width_ratios", None)
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw={"width_ratios": width_ratios}
                        if width_ratios else None, **options)
    if squeeze:
        return fig, list(axes.flat)
    return fig, axes


def _title(fig: Figure, title: str, notes: list[str] = ()) -> None:
    """The figure's title and, on the lines below it, what is missing or where the data come from."""
    lines = textwrap.wrap(title, 95)
    for note in notes:
        lines += textwrap.wrap(f"Note: {note}", 95)
    fig.suptitle("\n".join(lines))


def _placeholder(ax: Axes, table: str) -> None:
    ax.text(0.5, 0.5, f"no results yet:\nrun python -m replicate.run {table}", ha="center", va="center",
            transform=ax.transAxes, color="0.35", linespacing=1.6)
    ax.set_xticks([])
    ax.set_yticks([])


def _placeholder_figure(title: str, table: str) -> Figure:
    fig, (ax,) = _figure(1, 1, (WIDTH, 2.4))
    _placeholder(ax, table)
    _title(fig, title)
    return fig


def _encode(fig: Figure) -> dict[str, bytes]:
    encoded = {}
    for fmt in FORMATS:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else {}
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
        encoded[fmt] = buffer.getvalue()
        fig.set_layout_engine("none")  # laid out once, in inches: the other formats reuse it (half the cost)
    return encoded


# -- the figure list, rendering and the staleness check -------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    name: str
    prepare: Callable[[Context], Prepared]
    draw: Callable[[Prepared], Figure]


def plans(ctx: Context, curves: list[str] | None = None) -> list[Plan]:
    """Every figure to draw: the four fixed ones and the training curves of each table with runs."""
    fixed = [Plan("error_vs_complexity", prepare_error_vs_complexity, draw_error_vs_complexity),
             Plan("compression", prepare_compression, draw_compression),
             Plan("gradient_flow", prepare_gradient_flow, draw_gradient_flow),
             Plan("depth_and_ablation", prepare_depth_and_ablation, draw_depth_and_ablation)]
    tables = curves or ctx.tables_with_runs()  # names, or paths of the user's own spec files
    if not tables:
        return fixed + [Plan("training_curves", partial(prepare_training_curves, table=None),
                             draw_training_curves)]
    return fixed + [Plan(f"training_curves_{ctx.spec(t).name}", partial(prepare_training_curves, table=t),
                         draw_training_curves) for t in tables]


def _validate(results: Path, out: Path) -> None:
    if results.exists() and not results.is_dir():
        raise FigureError(f"--results {results} is a file: give the results folder (default: results)")
    if out.exists() and not out.is_dir():
        raise FigureError(f"--out {out} is a file: give a folder for the figures")


def _read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def render(results: Path, out: Path, curves: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Draw every figure into ``out`` (PNG + PDF) and record what each was drawn from in the manifest."""
    import matplotlib as mpl
    from tqdm import tqdm

    results, out = Path(results), Path(out)
    _validate(results, out)
    ctx = Context(results)
    written, entries = [], {}
    with mpl.rc_context(_style()):
        for plan in tqdm(plans(ctx, curves), desc="figures", unit="figure", leave=False,
                         disable=None if progress else True):
            prepared = plan.prepare(ctx)
            fig = plan.draw(prepared)
            files = []
            for fmt, content in _encode(fig).items():
                path = out / f"{plan.name}.{fmt}"
                atomic_write_bytes(path, content)
                files.append(path.name)
                written.append(path)
            entries[plan.name] = {"sha256": prepared.inputs.digest(), "files": files,
                                  "inputs": sorted(prepared.inputs.files)}
    previous = _read_manifest(out).get("figures", {})
    for name, entry in previous.items():
        if name in entries or not isinstance(entry, dict):
            continue
        if curves:  # only some training curves were asked for: the others stay as they were
            entries[name] = entry
        else:  # a figure the full set no longer has (e.g. the training-curves placeholder): remove it
            for file in entry.get("files", []):
                (out / Path(file).name).unlink(missing_ok=True)
    atomic_write_json(out / MANIFEST, {"version": FIGURES_VERSION, "figures": dict(sorted(entries.items()))})
    written.append(out / MANIFEST)
    return written


def check(results: Path, out: Path, curves: list[str] | None = None) -> list[str]:
    """One line per figure that is missing or older than its inputs (empty: all up to date)."""
    results, out = Path(results), Path(out)
    _validate(results, out)
    ctx = Context(results)
    recorded = _read_manifest(out).get("figures", {})
    stale = []
    for plan in plans(ctx, curves):
        files = [out / f"{plan.name}.{fmt}" for fmt in FORMATS]
        entry = recorded.get(plan.name)
        missing = [f.name for f in files if not f.is_file() or f.stat().st_size == 0]
        if missing:
            stale.append(f"{out / plan.name}: missing {', '.join(missing)}")
        elif not isinstance(entry, dict):
            stale.append(f"{out / plan.name}: not in {out / MANIFEST} (drawn by another version, or never)")
        elif entry.get("sha256") != plan.prepare(ctx).inputs.digest():
            stale.append(f"{out / plan.name}: its results (or the specs, published data or figure code) "
                         f"changed since it was drawn")
    return stale


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.figures", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--curves", nargs="+", metavar="TABLE",
                        help="draw training curves of these tables (default: every table with runs)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a figure is missing or older than its results (draws nothing)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.results, args.out, args.curves)
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print(f"{len(stale)} figure(s) out of date: run python -m replicate.figures", file=sys.stderr)
            return 1
        print(f"figures in {args.out} are up to date")
        return 0
    written = render(args.results, args.out, args.curves, progress=not args.no_progress)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
