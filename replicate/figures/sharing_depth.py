"""Error against how many blocks share one basis, from the tables that name ``sharing_depth``.

A row's sharing depth (``row.model.sharing_depth``; none = a whole stage) is how many consecutive decomposed
blocks it asks to share a basis; the x axis is how many blocks each basis of the trained network actually
serves (counted on the network, averaged over its bases), so a depth larger than a stage of a shallower
network (the mini profile's ResNet20) lands where it really is. Ours: seed means ± 1 std; published (hollow)
only beside a run it is comparable with.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .. import published
from ..complexity import lookup
from ..zoo import ModelSpec
from . import style
from .inputs import Context, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "sharing_depth"
COLUMNS = ["table", "row", "order", "setting", "source", "citation", "model", "data", "depth", "depth_label", "err",
           "err_std", "n"]


def depth_label(depth: int | None) -> str:
    return "whole stage" if depth is None else f"depth {depth}"


def blocks_per_basis(model: ModelSpec) -> float:
    """Decomposed blocks each shared basis of the network serves, averaged over its bases (NaN: none shared),
    as counted on the network and kept in the complexity cache: drawing builds no network."""
    counted = lookup(model).blocks_per_basis
    return float("nan") if counted is None else counted


def prepare(ctx: Context) -> Prepared:
    prepared, tables = ctx.begin(NAME)
    records = []
    sources = published.sources()
    for table in tables:
        for setting, done, rows in ctx.finished(prepared, table):
            for result in done:
                order = table.rows.index(result.row)
                records.append({"table": table.name, "row": result.row.id, "order": order, "setting": setting.label,
                                "source": "ours", "citation": "", "model": result.model, "data": result.data,
                                "depth": result.row.model.sharing_depth,
                                "depth_label": depth_label(result.row.model.sharing_depth), "err": result.mean(),
                                "err_std": result.std(), "n": result.n})
                entry = result.row.published
                if result.comparable and entry.top1_err is not None:
                    records.append({"table": table.name, "row": result.row.id, "order": order,
                                    "setting": setting.label, "source": "published",
                                    "citation": sources[entry.source].citation, "model": result.row.model,
                                    "data": result.row.dataset,
                                    "depth": result.row.model.sharing_depth,
                                    "depth_label": depth_label(result.row.model.sharing_depth), "err": entry.top1_err,
                                    "err_std": 0.0, "n": 0})
            if len(done) < len(rows):
                prepared.notes.append(f"{setting.label}: {len(done)} of {len(rows)} rows run so far")
    frame = pd.DataFrame(records, columns=COLUMNS)
    prepared.data = {"points": frame.drop_duplicates(subset=["setting", "source", "row"]),
                     "tables": [t.name for t in tables]}
    return prepared


def draw(prepared: Prepared) -> "Figure":
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    frame = prepared.data["points"].copy()
    heading = "Sharing depth: error against blocks per shared basis"
    if frame.empty:
        return style.no_results_figure(heading, prepared.data["tables"])
    frame["x"] = [blocks_per_basis(model) for model in frame.model]
    fig, axes = style.figure(1, 1, 3.3)
    ax = axes[0, 0]
    colours = style.palette()
    settings = list(dict.fromkeys(frame[frame.source == "ours"].setting))
    handles, notes, labels = [], [], []
    for index, setting in enumerate(settings):
        colour = colours[index % len(colours)]
        marker = [m for m in style.MARKERS if m != "D"][index % (len(style.MARKERS) - 1)]  # not colour alone
        mine = frame[(frame.setting == setting) & (frame.source == "ours")].sort_values(["x", "order"])
        shift = 1.04 ** (index - (len(settings) - 1) / 2)  # settings side by side on the log axis
        ax.errorbar(mine.x * shift, mine.err, yerr=mine.err_std, marker=marker, ms=5, capsize=2, lw=1.2,
                    elinewidth=0.8, color=colour, zorder=3)
        for x, same in mine.groupby("x", sort=True):
            for _, point in same.iterrows():  # say which depth a point is when its x does not
                if pd.isna(point.depth) or point.depth != x or len(same) > 1:
                    labels.append((point.x * shift, point.err, point.depth_label, colour))
            if len(same) > 1:
                notes.append(f"{same.model.iloc[0].name}: {', '.join(same.depth_label)} give the same network "
                             f"({x:g} blocks per basis)")
        trained = ", ".join(dict.fromkeys(m.name for m in mine.model))
        data = ", ".join(dict.fromkeys(style.dataset_name(d) for d in mine.data))
        bars = "± 1 std" if mine.n.max() > 1 else "no error bars"
        handles.append(Line2D([], [], color=colour, marker=marker, label=f"ours, {setting}: {trained} on {data}, "
                              f"mean of {style.seeds(mine.n)} ({bars})"))
    paper = frame[frame.source == "published"]
    if not paper.empty:
        ax.scatter(paper.x, paper.err, marker="D", s=40, facecolors="white", edgecolors="0.15", zorder=2)
        handles.append(style.published_handle(paper.citation, ls="none", marker="D", mec="0.15"))
    ax.set_xscale("log", base=2)
    ticks = sorted(frame.x.unique())
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.5)
    ax.margins(y=0.15)
    style.label_points(ax, labels)
    ax.set_xlabel("decomposed blocks per shared basis (mean over the network's bases)")
    ax.set_ylabel("top-1 test error (%)")
    style.legend_below(fig, handles, columns=1)
    style.title(fig, heading, [*notes, *prepared.notes])
    return fig
