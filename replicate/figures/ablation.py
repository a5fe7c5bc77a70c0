"""The ablation as a dot plot: one line per configuration, one panel per dataset of the rows.

Configurations are named from the row itself, not its id: the model's variant (original, decomposed without
sharing, naive whole-filter sharing, shared basis only, single or double shared), whether it trains with the
orthogonality term and whether it keeps the unshared BatchNorms. Each setting (profile, protocol) is one
colour; dots are seed means with ± 1 std bars; published errors are hollow diamonds, drawn beside a run they
are comparable with. The x range follows the data (never forced to 0), so small differences stay visible.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .. import published
from ..analysis import RowResult
from ..spec import Row
from . import style
from .inputs import Context, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "ablation"
COLUMNS = ["table", "panel", "variant", "order", "setting", "trained", "data", "as_rows", "err", "err_std", "n",
           "published", "citation"]


def variant(row: Row) -> str:
    """The line of the dot plot: what the row changes (``Row.configuration``)."""
    return row.configuration


def panel(result: RowResult) -> str:
    """The rows drawn together: what was trained (one dataset, the network the configurations vary), and the
    paper's rows they stand for when that is another setting."""
    trained = result.trained_as
    return trained if trained == result.paper_rows else f"{trained} (paper rows: {result.paper_rows})"


def prepare(ctx: Context) -> Prepared:
    prepared, tables = ctx.begin(NAME)
    records = []
    sources = published.sources()
    for table in tables:
        labels = {row.id: variant(row) for row in table.rows}
        for setting, done, rows in ctx.finished(prepared, table):
            for result in done:
                entry = result.row.published
                comparable = result.comparable and entry.top1_err is not None
                records.append({
                    "table": table.name, "panel": (table.short_title + ": " if len(tables) > 1 else "")
                    + panel(result), "variant": labels[result.row.id], "order": table.rows.index(result.row),
                    "setting": setting.label, "trained": result.model.name.split("-")[0], "data": result.data,
                    "as_rows": result.model == result.row.model and result.data == result.row.dataset,
                    "err": result.mean(), "err_std": result.std(), "n": result.n,
                    "published": entry.top1_err if comparable else float("nan"),
                    "citation": sources[entry.source].citation if comparable else ""})
            if len(done) < len(rows):
                prepared.notes.append(f"{table.short_title}, {setting.label}: {len(done)} of {len(rows)} rows "
                                      f"run so far")
    prepared.data = {"points": pd.DataFrame(records, columns=COLUMNS), "tables": [t.name for t in tables]}
    return prepared


def draw(prepared: Prepared) -> "Figure":
    from matplotlib.lines import Line2D

    frame = prepared.data["points"]
    heading = "Ablation: what makes shared filter bases work"
    if frame.empty:
        return style.no_results_figure(heading, prepared.data["tables"])
    panels = list(dict.fromkeys(frame.sort_values("order").panel))
    variants = list(dict.fromkeys(frame.sort_values("order").variant))
    settings = list(dict.fromkeys(frame.setting))
    height = 1.3 + 0.24 * len(variants) + 0.2 * len(settings)
    fig, axes = style.figure(1, len(panels), height, sharey=True)
    colours = style.palette()
    spacing = 0.5 / max(len(settings), 1)
    for ax, name in zip(axes[0], panels):
        mine = frame[frame.panel == name]
        for index, setting in enumerate(settings):
            points = mine[mine.setting == setting]
            if points.empty:
                continue
            y = points.variant.map(variants.index) + spacing * (index - (len(settings) - 1) / 2)
            ax.errorbar(points.err, y, xerr=points.err_std, ls="none", marker="o", ms=4.5, capsize=2,
                        elinewidth=0.9, color=colours[index % len(colours)], zorder=3)
            known = points.published.notna()
            if known.any():
                ax.scatter(points.published[known], y[known], marker="D", s=34, facecolors="white",
                           edgecolors="0.15", linewidths=1.0, zorder=2)
        ax.set_title(name)
        ax.set_xlabel("top-1 test error (%)")
        ax.margins(x=0.12)
        ax.grid(axis="y", visible=False)
        for position in range(len(variants)):
            ax.axhline(position, color="0.9", lw=0.6, zorder=0)
    first = axes[0, 0]
    first.set_yticks(range(len(variants)), variants)
    first.set_ylim(len(variants) - 0.5, -0.5)  # table order, top to bottom
    handles = []
    for index, setting in enumerate(settings):
        points = frame[frame.setting == setting]
        bars = "± 1 std" if points.n.max() > 1 else "no error bars"
        trained = ""
        if not points.as_rows.all():  # another network or other data than the rows': say which
            data = ", ".join(style.dataset_name(d) for d in dict.fromkeys(points.data))
            trained = f"{', '.join(dict.fromkeys(points.trained))} variants trained on {data}, "
        handles.append(Line2D([], [], ls="none", marker="o", color=colours[index % len(colours)],
                              label=f"ours, {setting}: {trained}mean of {style.seeds(points.n)} ({bars})"))
    known = frame[frame.published.notna()]
    if not known.empty:
        handles.append(style.published_handle(known.citation, ls="none", marker="D", mec="0.15"))
    style.legend_below(fig, handles, columns=1)
    style.title(fig, heading, prepared.notes)
    return fig
