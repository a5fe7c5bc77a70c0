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

from .. import published, stats
from ..analysis import RowResult
from ..spec import Row
from . import style
from .inputs import Context, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "ablation"
COLUMNS = ["table", "panel", "paper_rows", "variant", "order", "setting", "trained", "data", "as_rows", "err",
           "err_std", "low", "high", "n", "values", "published", "citation"]
# The paper look's line labels (a column is narrow), spelled out in its caption.
SHORT = {"decomposed, not shared": "decomposed", "naive (whole filters)": "naive", "shared basis only": "basis only",
         "single shared": "single", "double shared": "double", " + orthogonality": " + orth.",
         ", no unshared BN": ", no u-BN"}
INTERVAL_FROM = 3  # seeds: below this a t-interval is too wide to mean much, so the seeds are drawn instead


def variant(row: Row) -> str:
    """The line of the dot plot: what the row changes (``Row.configuration``)."""
    return row.configuration


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
                values = result.values()
                _, low, high = stats.interval(values) if values else (None, None, None)
                records.append({
                    "table": table.name, "panel": (table.short_title + ": " if len(tables) > 1 else "")
                    + result.trained_as, "paper_rows": result.paper_rows, "variant": labels[result.row.id],
                    "order": table.rows.index(result.row),
                    "setting": setting.label, "trained": result.model.name.split("-")[0], "data": result.data,
                    "as_rows": result.model == result.row.model and result.data == result.row.dataset,
                    "err": result.mean(), "err_std": result.std(), "low": low, "high": high, "n": len(values),
                    "values": [values[seed] for seed in sorted(values)],
                    "published": entry.top1_err if comparable else float("nan"),
                    "citation": sources[entry.source].citation if comparable else ""})
            if len(done) < len(rows):
                prepared.notes.append(f"{table.short_title}, {setting.label}: {len(done)} of {len(rows)} rows "
                                      f"run so far")
            left = [r for r in table.rows if r.id not in {result.row.id for result in rows}]
            if left:
                datasets = ", ".join(dict.fromkeys(style.dataset_name(r.dataset) for r in left))
                prepared.notes.append(f"{table.short_title}, {setting.label}: its {datasets} rows are not in this "
                                      f"profile and not drawn")
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
    inside = style.look().titles_inside
    height = 1.3 + 0.24 * len(variants) + 0.2 * len(settings)
    fig, axes = style.figure(1, len(panels), height, sharey=True)
    colours = style.palette()
    spacing = 0.5 / max(len(settings), 1)
    notes = []
    for ax, name in zip(axes[0], panels):
        mine = frame[frame.panel == name]
        for index, setting in enumerate(settings):
            points = mine[mine.setting == setting]
            if not points.empty:
                y = points.variant.map(variants.index) + spacing * (index - (len(settings) - 1) / 2)
                _draw_setting(ax, points, y, colours[index % len(colours)], setting, _marker(index))
        paper_rows = ", ".join(dict.fromkeys(mine.paper_rows))
        if not name.endswith(paper_rows):  # a proxy: say which of the paper's rows it stands for
            if inside:
                name = f"{name} (paper rows: {paper_rows})"
            else:
                notes.append(f"{name} stands for the paper's rows {paper_rows}.")
        ax.set_title(name)
        ax.set_xlabel("top-1 test error (%)")
        ax.margins(x=0.12)
        ax.grid(axis="y", visible=False)
        for position in range(len(variants)):
            ax.axhline(position, color="0.9", lw=0.6, zorder=0)
    first = axes[0, 0]
    first.set_yticks(range(len(variants)), variants if inside else [_short(v) for v in variants])
    if not inside:
        notes.append("Lines: naive = whole filters shared; basis only = the shared basis without unshared "
                     "filters; single/double = SingleShared/DoubleShared; orth. = with the orthogonality "
                     "regulariser; no u-BN = without the unshared BatchNorms.")
    first.set_ylim(len(variants) - 0.5, -0.5)  # table order, top to bottom
    handles = []
    for index, setting in enumerate(settings):
        points = frame[frame.setting == setting]
        colour = colours[index % len(colours)]
        trained = ""
        if not points.as_rows.all():  # another network or other data than the rows': say which
            data = ", ".join(style.dataset_name(d) for d in dict.fromkeys(points.data))
            trained = f"{', '.join(dict.fromkeys(points.trained))} variants trained on {data}, "
        bars = (f"bar: 95 % t-interval where n ≥ {INTERVAL_FROM}" if points.n.max() >= INTERVAL_FROM
                else f"no interval below {INTERVAL_FROM} seeds")
        long = f"ours, {setting}: {trained}seeds (dots) and their mean (filled), {style.seeds(points.n)}; {bars}"
        if not inside:
            notes.append(f"{long[0].upper()}{long[1:]}.")
        handles.append(Line2D([], [], ls="none", marker=_marker(index), color=colour,
                              label=long if inside else f"ours ({setting.split(',')[0]}): mean, seeds"))
    known = frame[frame.published.notna()]
    if not known.empty:
        handles.append(style.published_handle(known.citation, ls="none", marker="D", mec="0.15"))
    style.legend_below(fig, handles, columns=1)
    style.title(fig, heading, [*prepared.notes, *notes])
    return fig


def _short(label: str) -> str:
    for long, short in SHORT.items():
        label = label.replace(long, short)
    return label


def _marker(index: int) -> str:
    """Each setting's marker (its colour is not its only mark); the published points keep the diamond."""
    return [m for m in style.MARKERS if m != "D"][index % (len(style.MARKERS) - 1)]


def _draw_setting(ax, points: pd.DataFrame, y: pd.Series, colour, setting: str, marker: str = "o") -> None:
    """Each seed as a small dot, the mean as a filled marker, and a 95 % t-interval bar only from
    ``INTERVAL_FROM`` seeds on (two seeds give an interval ±12.7 standard errors wide: it says nothing).
    Every artist carries a gid naming its row and setting, so that tests can read back what was drawn."""
    for (_, point), position in zip(points.iterrows(), y):
        key = f"{point.variant}|{setting}"
        ax.scatter(point["values"], [position] * len(point["values"]), s=9, color=colour, alpha=0.45,
                   linewidths=0, zorder=2, gid=f"seeds|{key}")
        if point.n >= INTERVAL_FROM and point.low is not None:
            ax.plot([point.low, point.high], [position, position], color=colour, lw=1.0, zorder=2,
                    gid=f"interval|{key}")
        ax.plot([point.err], [position], ls="none", marker=marker, ms=5, color=colour, zorder=3, gid=f"mean|{key}")
        if point.published == point.published:  # not NaN
            ax.scatter([point.published], [position], marker="D", s=34, facecolors="white", edgecolors="0.15",
                       linewidths=1.0, zorder=2, gid=f"published|{key}")
