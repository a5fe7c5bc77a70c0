"""Shared-basis gradients during training, with and without orthogonality and the unshared BatchNorms.

Drawn from the tables that name ``gradient_flow``: first a table all of whose rows log gradient statistics
(the experiment made for it), else any other whose runs logged them. Of the settings present the paper's
scale comes first, then real data, then synthetic; of the trained networks the one logged under the most
(orthogonality, unshared BN) conditions, so that they sit side by side. Each condition is one colour and line
style: the logged values (mean over seeds) faint, their moving average on top.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..analysis import RowResult, run_folders_of
from ..config import Setting
from ..plan import image_counts
from ..spec import TableSpec
from . import style
from .inputs import Context, Inputs, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "gradient_flow"
LOG = "gradstats"
STATISTICS = (("mean_abs", "mean |g|"), ("max_abs", "max |g|"))
COLUMNS = ["condition", "basis", "step", "mean_abs", "max_abs", "seeds"]


def condition(orthogonality: bool, unshared_bn: bool) -> str:
    return (f"{'with' if orthogonality else 'without'} orthogonality, "
            f"{'with' if unshared_bn else 'without'} unshared BN")


CONDITIONS = [condition(o, b) for o in (True, False) for b in (True, False)]


def made_for_it(table: TableSpec) -> bool:
    """Every row logs gradient statistics: the experiment made for this figure."""
    return all(row.grad_stats[0] for row in table.rows)


def candidates(ctx: Context) -> list[TableSpec]:
    """Tables made for this figure first, then the others (each group in name order)."""
    return sorted(ctx.tables(NAME), key=lambda table: not made_for_it(table))


def source(ctx: Context, inputs: Inputs, tables: list[TableSpec] | None = None,
           ) -> tuple[TableSpec, Setting, list[tuple[RowResult, dict]]] | None:
    """(table, setting, [(row result, {seed: (folder, run, records)})]) of the runs drawn; None if none logged.

    ``tables``: the :func:`candidates`, when the caller has them already."""
    for table in candidates(ctx) if tables is None else tables:
        inputs.spec(table)
        for setting, rows in ctx.settings(table).items():
            logged = []
            for result in rows:
                found = {}
                for folder, run in run_folders_of(table, ctx.results, result):
                    records = inputs.records(folder, LOG)
                    if records:
                        found[run.seed] = (folder, run, records)
                if found:
                    logged.append((result, found))
            if not logged:
                continue
            groups: dict[tuple, list] = {}
            for result, found in logged:  # one network, with and without its unshared BatchNorms
                model = result.model
                groups.setdefault((result.data, model.name, model.dataset, model.sharing_depth), []).append(
                    (result, found))
            order = {row.id: i for i, row in enumerate(table.rows)}
            chosen = max(groups.values(), key=lambda group: (
                len({(r.row.training.orthogonality, r.row.model.unshared_bn) for r, _ in group}),
                -min(order[r.row.id] for r, _ in group)))
            for _, found in chosen:
                for folder, run, _ in found.values():
                    inputs.result(folder, run)
            return table, setting, chosen
    return None


def frame(chosen: list[tuple[RowResult, dict]]) -> pd.DataFrame:
    """Per condition, basis and logged step (in epochs trained): mean |g| and max |g| averaged over seeds."""
    parts = []
    for result, found in chosen:
        for seed, (_, run, records) in found.items():
            stats = pd.DataFrame(records)
            config = run.config
            batches = max(1, math.ceil(image_counts(config)[0] / config.recipe.batch_size))
            stats["step"] = stats["epoch"] - 1 + stats["batch"] / batches
            stats["condition"] = condition(result.row.training.orthogonality, result.row.model.unshared_bn)
            stats["seed"] = seed
            parts.append(stats)
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    stats = pd.concat(parts, ignore_index=True)
    grouped = stats.groupby(["condition", "basis", "step"], sort=True)
    return grouped.agg(mean_abs=("mean_abs", "mean"), max_abs=("max_abs", "mean"),
                       seeds=("seed", "nunique")).reset_index()[COLUMNS]


def prepare(ctx: Context) -> Prepared:
    prepared = Prepared(NAME, ctx.inputs())
    tables = candidates(ctx)
    found = source(ctx, prepared.inputs, tables)
    if found is None:
        first = tables[0].name if tables else "TABLE"
        prepared.data = {"placeholder": f"no gradient statistics logged yet:\nrun python -m replicate.run {first}"}
        return prepared
    table, setting, chosen = found
    data = frame(chosen)
    preferred = [t for t in tables if made_for_it(t)]
    if preferred and table.name != preferred[0].name:
        prepared.notes.append(f"no {preferred[0].name} runs yet (python -m replicate.run {preferred[0].name}): "
                              f"{table.name} runs shown")
    missing = [c for c in CONDITIONS if c not in set(data.condition)]
    if missing:
        prepared.notes.append("not run yet: " + "; ".join(missing))
    result = chosen[0][0]
    seeds = [len(logged) for _, logged in chosen]  # seeds per row
    model = result.model.label.replace(", no unshared BN", "")  # the conditions say which BatchNorms it has
    prepared.data = {
        "frame": data,
        "source": (f"{model} on {style.dataset_name(result.data)} ({setting.label}), {table.name} table, "
                   f"mean of {style.seeds(seeds)}"),
    }
    return prepared


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def smooth(values: pd.Series) -> tuple[np.ndarray, int]:
    """A centred moving geometric mean (the axes are logarithmic) and its window in logged steps."""
    window = max(1, len(values) // 12) | 1
    logs = np.log10(values.where(values > 0))
    return 10 ** logs.rolling(window, center=True, min_periods=1).mean().to_numpy(), window


def _look(name: str, colours: list) -> tuple:
    """Colour and marker say whether the orthogonality term was on (blue, circles / orange, squares), the line
    style whether the unshared BatchNorms were there (solid / dashed): every condition is told apart by more
    than a hue, so it reads under any colour-vision deficiency and in black and white."""
    ortho = "without orthogonality" not in name
    return (colours[0] if ortho else colours[1], "-" if "with unshared" in name else "--", "o" if ortho else "s")


def draw(prepared: Prepared) -> "Figure":
    from matplotlib.lines import Line2D

    heading = "Shared-basis gradient flow"
    if "placeholder" in prepared.data:
        return style.placeholder_figure(heading, prepared.data["placeholder"])
    data = prepared.data["frame"]
    bases = sorted(data.basis.unique(), key=_natural)
    columns = min(4, len(bases))
    blocks = math.ceil(len(bases) / columns)
    fig, axes = style.figure(2 * blocks, columns, 1.2 + 1.75 * 2 * blocks, sharex=True, sharey="row")
    colours = style.palette()
    looks = {c: _look(c, colours) for c in CONDITIONS}
    windows = set()
    for index, basis in enumerate(bases):
        block, column = divmod(index, columns)
        for line, (statistic, label) in enumerate(STATISTICS):
            ax = axes[2 * block + line, column]
            for name in CONDITIONS:
                group = data[(data.basis == basis) & (data.condition == name)].sort_values("step")
                if group.empty:
                    continue
                colour, ls, _ = looks[name]
                values = group[statistic].where(group[statistic] > 0)
                ax.plot(group.step, values, ls="-", lw=0.6, color=colour, alpha=0.3)
                smoothed, window = smooth(group[statistic])
                windows.add(window)
                ax.plot(group.step, smoothed, ls=ls, lw=1.5, color=colour, marker=looks[name][2],
                        markevery=max(1, len(group) // 6), ms=3.5)
            ax.set_yscale("log")
            if line == 0:
                ax.set_title(basis)
            if column == 0:
                ax.set_ylabel(label)
            if 2 * block + line == axes.shape[0] - 1:
                ax.set_xlabel("epochs trained")
    for index in range(len(bases), blocks * columns):
        block, column = divmod(index, columns)
        for line in range(2):
            axes[2 * block + line, column].set_visible(False)
    present = [c for c in CONDITIONS if c in set(data.condition)]
    handles = [Line2D([], [], color=looks[c][0], ls=looks[c][1], marker=looks[c][2], ms=3.5, lw=1.5, label=c)
               for c in present]
    span = f"{min(windows)}–{max(windows)}" if len(windows) > 1 else f"{next(iter(windows), 1)}"
    handles += [Line2D([], [], color="0.3", lw=0.6, alpha=0.5, label="logged values"),
                Line2D([], [], color="0.3", lw=1.5, label=f"moving average over {span} logged steps")]
    style.legend_below(fig, handles, columns=2)
    style.title(fig, heading, [prepared.data["source"], *prepared.notes])
    return fig
