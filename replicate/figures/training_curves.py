"""Training curves of one table: small multiples, one panel per row, and the orthogonality term underneath.

Each panel shows its row's evaluation error per epoch (mean over seeds; a band of ± 1 std with more than one
seed), one colour per setting, over the other rows of its dataset (first setting) in light grey; the rows of
one dataset fill lines of their own and share their y axis. The bottom panel shows the orthogonality term R
of the rows that train with it. Finished runs are drawn (as the tables count them: the runs analysis matches
to the rows); runs still training are counted in a note.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from ..analysis import run_folders_of
from ..results import run_folders
from . import style
from .inputs import Context, Prepared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "training_curves"
LOG = "metrics"
COLUMNS = ["row", "order", "seed", "setting", "orthogonality", "dataset", "epoch", "eval_top1_err", "train_ortho",
           "eval_split"]
PANEL_COLUMNS = {"report": 4, "paper": 2}  # panels per line: a paper's column holds two


def name_of(table: str | None) -> str:
    return f"{NAME}_{table}" if table else NAME


def prepare(ctx: Context, table: str | None = None) -> Prepared:
    """Curves of ``table`` (a shipped table's name or a spec file); without one, the no-results placeholder."""
    if table is None:
        return Prepared(NAME, ctx.inputs(), {"placeholder": "no runs yet:\nrun python -m replicate.run TABLE"})
    spec = ctx.spec(table)
    prepared = Prepared(name_of(spec.name), ctx.inputs())
    prepared.inputs.spec(spec)
    parts = []
    for setting, rows in ctx.settings(spec).items():
        for result in rows:
            for folder, run in run_folders_of(spec, ctx.results, result):
                prepared.inputs.result(folder, run)
                metrics = pd.DataFrame(prepared.inputs.records(folder, LOG))
                if metrics.empty:
                    continue
                metrics = metrics.reindex(columns=["epoch", "eval_top1_err", "train_ortho", "eval_split"])
                metrics["row"], metrics["order"] = result.row.id, spec.rows.index(result.row)
                metrics["seed"], metrics["setting"] = run.seed, setting.label
                metrics["orthogonality"] = result.row.training.orthogonality
                metrics["dataset"] = result.trained_as  # the group of panels that share a y axis
                parts.append(metrics)
    frame = pd.concat(parts, ignore_index=True)[COLUMNS] if parts else pd.DataFrame(columns=COLUMNS)
    unfinished = sum(1 for folder in run_folders(ctx.results, spec.name) if not folder.result_file.is_file())
    if unfinished:
        prepared.notes.append(f"{unfinished} run(s) of this table have not finished: not drawn yet")
    if frame.empty:
        prepared.data = {"placeholder": f"no finished runs yet:\nrun python -m replicate.run {spec.name}",
                         "title": spec.short_title}
    else:
        prepared.data = {"frame": frame, "title": spec.short_title}
    return prepared


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting, row and epoch: mean and std over seeds of the error, mean of the orthogonality term."""
    grouped = frame.groupby(["setting", "row", "order", "epoch"], sort=True)
    return grouped.agg(err=("eval_top1_err", "mean"), std=("eval_top1_err", "std"), ortho=("train_ortho", "mean"),
                       seeds=("seed", "nunique"), orthogonality=("orthogonality", "first"),
                       dataset=("dataset", "first")).reset_index()


def _clip(means: pd.DataFrame) -> dict[str, float]:
    """Per group of panels, the top of the error axis: the highest mean (plus its band) from the second half of
    training on, so the last epochs' differences fill the panel instead of a few pixels under the first epochs'."""
    late = means[means.epoch >= (means.epoch.max() + 1) / 2]
    spread = late["std"].fillna(0)
    top = (late.err + spread).groupby(late.dataset).max()
    low = late.err.groupby(late.dataset).min()
    return {group: float(top[group] + 0.25 * max(top[group] - low[group], 1.0)) for group in top.index}


def _layout(rows: list[str], groups: dict[str, str]) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Grid cell of each row's panel: rows of one dataset fill whole lines of their own (their errors share a
    scale); returns (cells, grid lines, columns)."""
    columns = min(PANEL_COLUMNS[style.look().name], len(rows))
    cells, line = {}, 0
    for group in dict.fromkeys(groups[r] for r in rows):
        members = [r for r in rows if groups[r] == group]
        for index, row in enumerate(members):
            cells[row] = (line + index // columns, index % columns)
        line += math.ceil(len(members) / columns)
    return cells, line, columns


def draw(prepared: Prepared) -> "Figure":
    from matplotlib.lines import Line2D

    heading = "Training curves" + (f": {prepared.data['title']}" if "title" in prepared.data else "")
    if "placeholder" in prepared.data:
        return style.placeholder_figure(heading, prepared.data["placeholder"])
    frame = prepared.data["frame"]
    means = curves(frame)
    rows = list(dict.fromkeys(means.sort_values("order").row))
    groups = dict(zip(frame.row, frame.dataset))
    settings = list(dict.fromkeys(frame.setting))
    cells, lines, columns = _layout(rows, groups)
    with_term = list(dict.fromkeys(means[means.orthogonality.astype(bool) & (means.ortho > 0)]
                                   .sort_values("order").row))
    per_line = PANEL_COLUMNS[style.look().name]
    legend_lines = math.ceil(len(with_term) / per_line)
    fig = style.canvas(0.9 + 1.35 * lines + 1.5 + 0.17 * legend_lines + 0.2 * len(settings))
    grid = fig.add_gridspec(lines + 1, columns, height_ratios=[1] * lines + [1.15])
    colours = style.palette()
    setting_colours = ["0.15", *colours[len(colours) // 2:]]  # the R panel's rows take the palette's first half
    first = settings[0]
    top = _clip(means)
    shared: dict[str, object] = {}  # the first panel of each dataset: its y axis is shared by the others
    below = {(line, column) for line, column in cells.values()}
    for row in rows:
        line, column = cells[row]
        group = groups[row]
        ax = fig.add_subplot(grid[line, column], sharey=shared.get(group))
        shared.setdefault(group, ax)
        for other in rows:  # the other rows of the same dataset, for comparison
            if other != row and groups[other] == group:
                context = means[(means.setting == first) & (means.row == other)]
                ax.plot(context.epoch, context.err, color="0.85", lw=0.7, zorder=1)
        for number, setting in enumerate(settings):
            mine = means[(means.setting == setting) & (means.row == row)]
            if mine.empty:
                continue
            colour = setting_colours[number % len(setting_colours)]
            ax.plot(mine.epoch, mine.err, color=colour, lw=1.4, zorder=3,
                    ls=style.LINESTYLES[number % len(style.LINESTYLES)])  # not by colour alone
            if mine.seeds.max() > 1:
                spread = mine["std"].fillna(0)
                ax.fill_between(mine.epoch, mine.err - spread, mine.err + spread, color=colour, alpha=0.2, lw=0,
                                zorder=2)
            ax.text(0.96, 0.94 - 0.14 * number, f"{mine.err.iloc[-1]:.1f}", transform=ax.transAxes, ha="right",
                    va="top", fontsize=style.small(), color=colour)
        ax.set_title(row, fontsize=style.small())
        ax.tick_params(labelleft=column == 0, labelbottom=(line + 1, column) not in below)
        ax.set_ylim(top=top.get(group))
        ax.xaxis.get_major_locator().set_params(integer=True)
        if column == 0:
            several = len(set(groups.values())) > 1  # then each line of panels says its data
            ax.set_ylabel("top-1 error (%)" + (f"\n{group.split(':')[0]}" if several else ""),
                          fontsize=style.small())
    split = ", ".join(sorted(frame.eval_split.dropna().unique())) or "evaluation"
    ortho = fig.add_subplot(grid[lines, :])
    term = means[means.orthogonality.astype(bool) & (means.ortho > 0)]
    for number, row in enumerate(with_term):
        mine = term[term.row == row]
        mine = mine[mine.setting == (first if first in set(mine.setting) else mine.setting.iloc[0])]
        colour = colours[number % (len(colours) // 2)]
        ls = style.LINESTYLES[number % len(style.LINESTYLES)]  # curves that coincide stay visible: style, marker
        ortho.plot(mine.epoch, mine.ortho, color=colour, ls=ls, lw=1.3, label=row,
                   marker=style.MARKERS[number % len(style.MARKERS)], ms=3.5, mfc="white")
    if with_term:
        ortho.set_yscale("log")
        style.log_axis(ortho.yaxis, term.ortho.min(), term.ortho.max())
        ortho.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), frameon=False, fontsize=style.small(),
                     ncol=min(per_line, len(with_term)))
    else:
        style.placeholder(ortho, "no row trains with the orthogonality term")
    ortho.set_ylabel("orthogonality\nterm R", fontsize=style.small())
    ortho.set_xlabel("epoch")
    r_title = f"orthogonality term R of the rows that train with it ({first})"
    if style.look().titles_inside:
        ortho.set_title(r_title, fontsize=style.small())
    else:  # a column is too narrow for it: the caption says it
        prepared.notes.append(f"Bottom panel: the {r_title}.")
    if with_term:  # an empty panel has fixed (no) ticks: nothing to make integer
        ortho.xaxis.get_major_locator().set_params(integer=True)
    handles = []
    for number, setting in enumerate(settings):
        seeds = frame[frame.setting == setting].groupby("row").seed.nunique()
        band = ", band ± 1 std" if seeds.max() > 1 else ""
        handles.append(Line2D([], [], color=setting_colours[number % len(setting_colours)], lw=1.4,
                              ls=style.LINESTYLES[number % len(style.LINESTYLES)],
                              label=f"{setting}: mean of {style.seeds(seeds)}{band}"))
    if any(list(groups.values()).count(group) > 1 for group in groups.values()):  # grey lines were drawn
        handles.append(Line2D([], [], color="0.85", lw=0.7, label=f"the other rows of the dataset ({first})"))
    style.legend_below(fig, handles, columns=2)
    groups_named = "; ".join(dict.fromkeys(groups.values()))
    style.title(fig, heading, [f"error on the {split} set after each epoch ({groups_named}); in the corner: the "
                               f"last epoch's; the error axes span the second half of training, where the rows "
                               f"differ (earlier epochs run off the top)",
                               *prepared.notes])
    return fig
