"""Parameters saved against error change: each shared row of the tables that name ``compression`` against
the original network of its family in the same table (the pairs of ``analysis.default_claims``).

Published pairs (hollow) where the paper printed both errors; ours (filled) from runs at the paper's scale,
the difference of the seed means with error bars ± √(s_a² + s_b²) (the standard deviations over seeds).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from .. import published
from ..analysis import default_claims
from ..complexity import lookup
from ..spec import Row, TableSpec
from . import style
from .inputs import Context, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "compression"
COLUMNS = ["table", "title", "dataset", "row", "label", "baseline", "source", "citation", "setting", "saved_pct",
           "delta_err", "delta_std", "n"]


def pairs(table: TableSpec) -> list[tuple[Row, Row]]:
    by_id = {r.id: r for r in table.rows}
    return [(by_id[c.row], by_id[c.than]) for c in default_claims(table)]


def points(ctx: Context, prepared: Prepared, tables: list) -> pd.DataFrame:
    records = []
    sources = published.sources()
    for table in tables:
        for row, base in pairs(table):
            if row.published and base.published and None not in (row.published.top1_err, base.published.top1_err):
                saved = 1 - lookup(row.model).params / lookup(base.model).params
                citations = sorted({sources[e.source].citation for e in (row.published, base.published)})
                records.append(_record(table, row, base, "published", "; ".join(citations), "", 100 * saved,
                                       row.published.top1_err - base.published.top1_err, 0.0, 0))
        for setting, done, _ in ctx.finished(prepared, table, keep=lambda r: r.n and r.at_paper_scale):
            by_row = {r.row.id: r for r in done}
            for row, base in pairs(table):
                if row.id in by_row and base.id in by_row:
                    a, b = by_row[row.id], by_row[base.id]
                    records.append(_record(table, row, base, "ours", "", setting.label,
                                           100 * (1 - a.params / b.params), a.mean() - b.mean(),
                                           math.hypot(a.std(), b.std()), min(a.n, b.n)))
    return pd.DataFrame(records, columns=COLUMNS)


def _record(table: TableSpec, row: Row, base: Row, source, citation, setting, saved, delta, std, n) -> dict:
    return {"table": table.name, "title": table.short_title, "dataset": row.dataset, "row": row.id,
            "label": row.label, "baseline": base.label, "source": source, "citation": citation, "setting": setting,
            "saved_pct": saved, "delta_err": delta, "delta_std": std, "n": n}


def prepare(ctx: Context) -> Prepared:
    prepared, tables = ctx.begin(NAME)
    frame = points(ctx, prepared, tables)
    if (frame.source == "ours").sum() == 0:
        names = ", ".join(t.name for t in tables)
        prepared.notes.append(f"no reproduced pairs yet: run a shared row and its original network with the full "
                              f"profile (python -m replicate.run TABLE, TABLE one of {names})")
    absent = [t.short_title for t in tables if (frame.table == t.name).sum() == 0]
    if absent:
        prepared.notes.append(f"no pair to draw (no published pair, no runs) for: {', '.join(absent)}")
    prepared.data = {"points": frame, "tables": [(t.name, t.short_title, t.rows[0].dataset) for t in tables]}
    return prepared


def _short(label: str) -> str:
    """ResNet34-S16U2 -> S16U2 (the family is in the baseline and the legend)."""
    return label.split("-", 1)[1] if "-" in label else label


def draw(prepared: Prepared) -> "Figure":
    from matplotlib.lines import Line2D

    frame = prepared.data["points"]
    heading = "Compression against accuracy: each shared model against the original network of its table"
    fig, axes = style.figure(1, 1, 3.4)
    ax = axes[0, 0]
    colours = style.palette()
    ax.axhline(0, color="0.4", lw=0.8, zorder=1)
    handles, labels = [], []
    for index, (name, short_title, dataset) in enumerate(prepared.data["tables"]):
        mine = frame[frame.table == name]
        if mine.empty:
            continue  # no legend entry for a table without points
        colour, marker = colours[index % len(colours)], style.MARKERS[index % len(style.MARKERS)]
        paper, ours = mine[mine.source == "published"], mine[mine.source == "ours"]
        ax.scatter(paper.saved_pct, paper.delta_err, marker=marker, s=28, facecolors="white", edgecolors=colour,
                   linewidths=1.1, zorder=2)
        if not ours.empty:
            ax.errorbar(ours.saved_pct, ours.delta_err, yerr=ours.delta_std, ls="none", marker=marker, ms=5,
                        color=colour, capsize=2, elinewidth=0.8, zorder=3)
        several = mine.baseline.nunique() > 1  # then the family and depth stay in the labels
        for _, group in pd.concat([ours, paper]).groupby("row", sort=False):
            if len(group) > 1:  # ours and published of one model: a thin link shows how far apart they are
                ax.plot(group.saved_pct, group.delta_err, ls=":", lw=0.8, color=colour, zorder=1)
            point = group.iloc[0]  # one label per model, on our point when there is one
            labels.append((point.saved_pct, point.delta_err, point.label if several else _short(point.label),
                           colour))
        handles.append(Line2D([], [], ls="none", marker=marker, color=colour, fillstyle="left",  # colour only
                              label=f"{short_title} ({style.dataset_name(dataset)})"))
    paper = frame[frame.source == "published"]
    if not paper.empty:
        citations = (c for text in paper.citation for c in text.split("; "))
        handles.append(style.published_handle(citations, ls="none", marker="o", mec="0.3", color="0.3"))
    ours = frame[frame.source == "ours"]
    for setting, mine in ours.groupby("setting", sort=True):
        bars = "bars ± √(s₁² + s₂²), s: std over seeds" if mine.n.max() > 1 else "no error bars"
        handles.append(Line2D([], [], ls="none", marker="o", color="0.3",
                              label=f"ours, {setting}: {style.seeds(mine.n)} ({bars})"))
    ax.set_xlabel("parameters saved against the original network (%)")
    ax.set_ylabel("error change (points)\nbelow 0: lower error")
    ax.margins(x=0.08, y=0.1)
    if frame.empty:
        ax.set_xlim(0, 100)
        ax.set_ylim(-1, 1)
    style.label_points(ax, labels)
    style.legend_below(fig, handles, columns=2)
    style.title(fig, heading, prepared.notes)
    return fig
