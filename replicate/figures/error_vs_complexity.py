"""Error against parameters and FLOPs: the README graph of the tables that name ``error_vs_complexity``.

Series come from the models themselves: the original networks of each family; for each shared rank with more
than one SingleShared row, the sweep over the unique rank (``ResNet34-S16Uu``); and the rows with the
smallest unique rank across shared ranks (``ResNet34-SsU1``). A point may lie on two series, as in the paper.
Published points (hollow, dashed) are the rows' published errors; ours (filled) are the seed means of runs at
the paper's scale (full profile, the row's dataset), error bars ± 1 standard deviation over seeds; crosses are
the authors' released checkpoints re-evaluated here (``replicate.evaluate TABLE --checkpoints DIR``).
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pandas as pd

from .. import published
from ..analysis import RowResult
from ..complexity import lookup
from ..spec import Row
from . import style
from .inputs import Context, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "error_vs_complexity"
COLUMNS = ["order", "series", "row", "model", "label", "source", "citation", "setting", "protocol", "params_M",
           "flops_G", "err", "err_std", "n"]
PROTOCOL_STYLE = {"paper": "-", "clean": "-."}


def series_of(rows: tuple[Row, ...]) -> dict[str, list[tuple[tuple, str]]]:
    """Row id -> the series its point lies on, as (drawing order, name): originals, sweeps by shared rank, then
    the series of the smallest unique rank."""
    single = [r for r in rows if r.model.config.variant == "single"]

    def base(row: Row) -> str:
        return row.model.config.base_name

    by_shared = Counter((base(r), r.model.config.shared_rank) for r in single)
    smallest: dict[str, int] = {}
    for r in single:
        smallest[base(r)] = min(smallest.get(base(r), r.model.config.unique_rank), r.model.config.unique_rank)
    by_unique = Counter(base(r) for r in single if r.model.config.unique_rank == smallest[base(r)])
    found = {}
    for r in rows:
        config = r.model.config
        names = []
        if config.variant == "original":
            names.append(((0, 0), f"original {config.family.display}"))
        elif config.variant == "single":
            if by_shared[(base(r), config.shared_rank)] > 1:
                names.append(((1, config.shared_rank), f"{base(r)}-S{config.shared_rank}Uu"))
            if config.unique_rank == smallest[base(r)] and by_unique[base(r)] > 1:
                names.append(((2, config.unique_rank), f"{base(r)}-SsU{config.unique_rank}"))
        found[r.id] = names
    return found


def drawn(result: RowResult) -> bool:
    """Comparable with the published points: runs or the authors' weights, at the paper's scale."""
    return bool((result.n or result.released) and result.at_paper_scale)


def points(ctx: Context, prepared: Prepared, tables: list) -> pd.DataFrame:
    """Published points of every row with a published error, and ours at the paper's scale."""
    records = []
    sources = published.sources()
    for table in tables:
        series = series_of(table.rows)
        for row in table.rows:
            entry = row.published
            if entry is None or entry.top1_err is None:
                continue
            counts = lookup(row.model)
            for order, name in series[row.id]:
                records.append(_record(order, name, row, "published", sources[entry.source].citation, "", "",
                                       counts.params, counts.macs, entry.top1_err, 0.0, 0))
        for setting, done, _ in ctx.finished(prepared, table, keep=drawn):
            for result in done:
                for order, name in series[result.row.id]:
                    if result.n:
                        records.append(_record(order, name, result.row, "ours", "", setting.label, setting.protocol,
                                               result.params, result.macs, result.mean(), result.std(), result.n))
                    if result.released is not None:  # the authors' weights, re-evaluated here
                        records.append(_record(order, name, result.row, "released", "", "", "", result.params,
                                               result.macs, result.released.selected.top1_err, 0.0, 1))
    return pd.DataFrame(records, columns=COLUMNS)


def _record(order, series, row: Row, source, citation, setting, protocol, params, macs, err, std, n) -> dict:
    return {"order": order, "series": series, "row": row.id, "model": row.model.name, "label": row.label,
            "source": source, "citation": citation, "setting": setting, "protocol": protocol,
            "params_M": params / 1e6, "flops_G": 2 * macs / 1e9, "err": err, "err_std": std, "n": n}


def prepare(ctx: Context) -> Prepared:
    prepared, tables = ctx.begin(NAME)
    frame = points(ctx, prepared, tables)
    ours = frame[frame.source == "ours"]
    if ours.empty:
        skipped = sorted({s.label for t in tables for s, rows in ctx.settings(t).items()
                          if not any(r.at_paper_scale for r in rows if r.n)})
        run = " or ".join(f"python -m replicate.run {t.name}" for t in tables)
        prepared.notes.append(f"no reproduced points yet ({run}, full profile)" +
                              (f"; runs of other settings are not comparable with the graph and are not drawn: "
                               f"{'; '.join(skipped)}" if skipped else ""))
    else:
        total = frame[frame.source == "published"].row.nunique()
        if ours.row.nunique() < total:
            prepared.notes.append(f"reproduced {ours.row.nunique()} of {total} published points so far")
    if not (frame.source == "released").any():
        prepared.notes.append("the authors' released weights: not re-evaluated here (python -m replicate.evaluate "
                              + " or ".join(t.name for t in tables) + " --checkpoints DIR)")
    datasets = sorted({style.dataset_name(r.dataset) for t in tables for r in t.rows})
    prepared.data = {"points": frame, "datasets": datasets}
    return prepared


def draw(prepared: Prepared) -> "Figure":
    from matplotlib.lines import Line2D

    frame = prepared.data["points"]
    heading = f"{', '.join(prepared.data['datasets'])}: top-1 error against model size and cost"
    if frame.empty:
        return style.placeholder_figure(heading, "no points: no table names this figure")
    fig, axes = style.figure(1, 2, 3.5, sharey=True)
    colours = style.palette()
    names = list(frame.sort_values(["order", "series"]).series.drop_duplicates())
    looks = {name: (colours[i % len(colours)], style.MARKERS[i % len(style.MARKERS)])
             for i, name in enumerate(names)}
    for ax, (column, label) in zip(axes[0], [("params_M", "parameters (M)"), ("flops_G", "FLOPs (G, 2 × MACs)")]):
        for name in names:
            colour, marker = looks[name]
            mine = frame[frame.series == name].sort_values(column)
            paper = mine[mine.source == "published"]
            ax.plot(paper[column], paper.err, ls="--", lw=0.9, color=colour, marker=marker, ms=5, mfc="white",
                    mec=colour, mew=1.1, zorder=2, gid=f"published|{name}|{column}")
            released = mine[mine.source == "released"]
            ax.scatter(released[column], released.err, marker="x", s=30, color=colour, linewidths=1.2, zorder=4)
            for _, ours in mine[mine.source == "ours"].groupby("setting", sort=True):
                ls = PROTOCOL_STYLE.get(ours.protocol.iloc[0], "-")
                bars = ax.errorbar(ours[column], ours.err, yerr=ours.err_std, ls=ls, lw=1.3, color=colour,
                                   marker=marker, ms=5, capsize=2, elinewidth=0.8, zorder=3)
                bars.lines[0].set_gid(f"ours|{name}|{column}")  # tests read the drawn values back
        ax.set_xlabel(label)
    axes[0, 0].set_ylabel("top-1 test error (%)")
    # half-filled: a series' colour and shape only (filled means ours, hollow published, in every figure)
    handles = [Line2D([], [], color=looks[n][0], marker=looks[n][1], fillstyle="left", ls="none", label=n)
               for n in names]
    paper = frame[frame.source == "published"]
    if not paper.empty:
        handles.append(style.published_handle(paper.citation, color="0.3", marker="o", ls="--"))
    if (frame.source == "released").any():
        handles.append(Line2D([], [], color="0.3", marker="x", ls="none",
                              label="the authors' released weights, re-evaluated here"))
    ours = frame[frame.source == "ours"]
    for setting, mine in ours.groupby("setting", sort=True):
        bars = "error bars ± 1 std" if mine.n.max() > 1 else "no error bars"
        handles.append(Line2D([], [], color="0.3", marker="o", ls=PROTOCOL_STYLE.get(mine.protocol.iloc[0], "-"),
                              label=f"ours, {setting}: mean of {style.seeds(mine.n)} ({bars})"))
    style.legend_below(fig, handles, columns=3)
    style.title(fig, heading, prepared.notes)
    return fig
