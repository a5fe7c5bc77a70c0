"""How every figure looks: rc settings, the colour-blind palette, titles and notes, placeholders, encoding.

Two looks (:data:`LOOKS`): ``report`` (the default: 7 in wide, fonts no smaller than 8 pt, the title and its
notes inside the figure) and ``paper`` (one column of a paper, 3.25 in wide, 7 pt text at print size, no title
or note inside the image: they go to a caption file beside it, and a figure or panel without data is not
drawn). Titles and notes are wrapped at word boundaries only (never inside a word, never at a hyphen).
matplotlib and seaborn are imported inside the functions, so that checking the manifest never loads them.
"""
from __future__ import annotations

import io
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ..catalog import display_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

WIDTH = 7.0  # inches, of the report look (the heights the figures ask for are for this width)
DPI = 200
FORMATS = ("png", "pdf")
TITLE_SIZE = 9.5


@dataclass(frozen=True)
class Look:
    name: str
    width: float  # inches
    height_scale: float  # of the heights the figures ask for (laid out for the report's 7 in)
    font: float  # points, at print size
    small: float  # the smallest text drawn (tick labels, corner numbers)
    titles_inside: bool  # False: title and notes go to the caption file


LOOKS = {"report": Look("report", WIDTH, 1.0, 9, 8, True),
         "paper": Look("paper", 3.25, 0.72, 7, 7, False)}


@dataclass
class _State:
    look: Look = LOOKS["report"]
    caption: list[str] = field(default_factory=list)  # paper look: the title, notes and what was left out


_state = _State()


class NoData(Exception):
    """A paper-look figure without data: it is not drawn (the report look draws a placeholder instead)."""


@contextmanager
def use(name: str) -> Iterator[Look]:
    """Draw with the look ``name`` inside the block."""
    previous = _state.look
    _state.look = LOOKS[name]
    try:
        yield _state.look
    finally:
        _state.look = previous


def look() -> Look:
    return _state.look


def small() -> float:
    """The size of the smallest text of the current look (corner numbers, panel titles)."""
    return _state.look.small


def take_caption() -> list[str]:
    """The caption lines gathered while the last figure was drawn (paper look), and start afresh."""
    lines, _state.caption = _state.caption, []
    return lines
FAINT = "0.45"  # grey of secondary text and context lines
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def dataset_name(key: str) -> str:
    return display_name(key)


def rc() -> dict:
    import seaborn as sns
    from cycler import cycler

    settings = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper")}
    font, tick = _state.look.font, _state.look.small
    settings.update({
        "font.size": font, "axes.titlesize": font, "axes.labelsize": font, "xtick.labelsize": tick,
        "ytick.labelsize": tick, "legend.fontsize": tick, "legend.title_fontsize": tick,
        "figure.titlesize": TITLE_SIZE,
        "lines.markersize": 5, "pdf.fonttype": 42, "ps.fonttype": 42, "grid.linewidth": 0.6,
        "axes.prop_cycle": cycler(color=palette()),
    })
    return settings


def palette() -> list:
    import seaborn as sns

    return list(sns.color_palette("colorblind"))


def figure(rows: int, columns: int, height: float, **options):
    """A constrained-layout figure of the standard width and its axes as a 2-D array."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=_size(height), layout="constrained")
    ratios = {key: options.pop(key) for key in ("width_ratios", "height_ratios") if key in options}
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw=ratios or None, **options)
    return fig, axes


def canvas(height: float) -> "Figure":
    """An empty constrained-layout figure of the standard width (for a grid laid out by hand)."""
    from matplotlib.figure import Figure

    return Figure(figsize=_size(height), layout="constrained")


def _size(height: float) -> tuple[float, float]:
    """The current look's width, and the height asked for (in the report's inches) scaled to it."""
    return _state.look.width, height * _state.look.height_scale


def wrap(text: str, fontsize: float, width: float = WIDTH) -> list[str]:
    """Lines of at most the figure's width, broken between words only."""
    characters = max(20, int(width * 72 / (0.52 * fontsize)))
    return textwrap.wrap(text, characters, break_long_words=False, break_on_hyphens=False)


def title(fig: "Figure", text: str, notes: Iterable[str] = ()) -> None:
    """A short title and, on the lines below it, the notes: what is missing, where the data come from.
    The paper look keeps them for the caption file instead: nothing but data inside a paper's figure."""
    if not _state.look.titles_inside:
        _state.caption[:0] = [text, *notes]
        return
    lines = wrap(text, TITLE_SIZE)
    for note in notes:
        lines += wrap(note, TITLE_SIZE)
    fig.suptitle("\n".join(lines), fontsize=TITLE_SIZE)


def placeholder(ax: "Axes", text: str) -> None:
    """A panel without data: a grey note in it (report), or nothing at all and a caption line (paper)."""
    if not _state.look.titles_inside:
        ax.set_axis_off()
        _state.caption.append(f"Not drawn: {' '.join(text.split())}.")
        return
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=FAINT, linespacing=1.6,
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def placeholder_figure(heading: str, text: str) -> "Figure":
    """A figure without data: a placeholder (report); the paper look draws none (``NoData``)."""
    if not _state.look.titles_inside:
        raise NoData(f"{heading}: {' '.join(text.split())}")
    fig, axes = figure(1, 1, 2.4)
    placeholder(axes[0, 0], text)
    title(fig, heading)
    return fig


def no_results_figure(heading: str, tables: list[str]) -> "Figure":
    """The placeholder of a figure none of whose tables has a finished run: it says what to run."""
    run = " or ".join(tables) or "TABLE"
    return placeholder_figure(heading, f"no results yet:\nrun python -m replicate.run {run}")


def published_handle(citations: Iterable[str], **look) -> "Line2D":
    """The legend entry of the published points (hollow markers, ``look`` their style), each source named once."""
    from matplotlib.lines import Line2D

    return Line2D([], [], mfc="white", label=f"published ({'; '.join(sorted(set(citations)))})", **look)


def legend_below(fig: "Figure", handles: list, columns: int = 2) -> None:
    """A frameless legend under the axes, in as many columns (at most ``columns``) as fit the figure's width;
    nothing when there is no handle (a legend has no entry without points)."""
    if not handles:
        return
    lengths = [len(h.get_label()) for h in handles]

    def width(count: int) -> float:  # points: entries fill the columns top to bottom, each as wide as its longest
        per = -(-len(lengths) // count)
        return sum(0.55 * 8 * max(lengths[i:i + per]) + 40 for i in range(0, len(lengths), per))

    fit = [count for count in range(1, min(columns, len(handles)) + 1) if width(count) <= fig.get_figwidth() * 72]
    if not fit:  # even one column is too wide: wrap the longest labels to the figure's width
        for handle in handles:
            handle.set_label("\n".join(wrap(handle.get_label(), 8, fig.get_figwidth() * 0.9)))
    fig.legend(handles=handles, loc="outside lower center", ncol=max(fit or [1]), frameon=False)


def log_axis(axis, low: float, high: float) -> None:
    """A logarithmic axis labelled with plain numbers (0.01, 0.02, 0.05, ...), as many ticks as its span allows."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = np.log10(high / low) if low > 0 and high > 0 else 0
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def label_points(ax: "Axes", points: list[tuple[float, float, str, object]], fontsize: float = 8) -> None:
    """Label (x, y, text, colour) points beside them, each where it covers no point and no earlier label.

    Positions are estimated in points from the current limits (call after plotting): right of the point first,
    then left, above, below and further out; when nothing is free, the first choice.
    """
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    width = ax.figure.get_figwidth() * 72 * 0.8
    height = ax.figure.get_figheight() * 72 * 0.55

    def where(x: float, y: float) -> tuple[float, float]:
        return (x - x0) / ((x1 - x0) or 1) * width, (y - y0) / ((y1 - y0) or 1) * height

    taken = [(px - 4, py - 4, px + 4, py + 4) for px, py in (where(x, y) for x, y, _, _ in points)]
    offsets = [(4, -4), (-4, -4), (4, 4), (4, -12), (-4, 4), (-4, -12), (4, 12), (4, -20), (-4, 12), (-4, -20)]
    for x, y, text, colour in sorted(points, key=lambda p: (p[0], p[1])):
        px, py = where(x, y)
        size = (0.62 * fontsize * len(text), 1.25 * fontsize)
        boxes = []
        for dx, dy in offsets:
            left = px + dx if dx > 0 else px + dx - size[0]
            boxes.append(((dx, dy), (left, py + dy, left + size[0], py + dy + size[1])))
        free = [b for b in boxes if not any(b[1][0] < t[2] and t[0] < b[1][2] and b[1][1] < t[3] and t[1] < b[1][3]
                                            for t in taken)]
        (dx, dy), box = (free or boxes)[0]
        taken.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha="left" if dx > 0 else "right",
                    va="bottom", fontsize=fontsize, color=colour)


def seeds(counts: Iterable[int]) -> str:
    """'3 seeds', '1 seed' or '2–3 seeds' for the seed counts of the points drawn."""
    counts = sorted(set(int(c) for c in counts))
    if not counts:
        return "no seeds"
    text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{text} seed{'s' if counts[-1] > 1 else ''}"


def encode(fig: "Figure") -> dict[str, bytes]:
    """PNG and PDF bytes (no creation date: the same drawing gives the same PDF)."""
    encoded = {}
    for fmt in FORMATS:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else {}
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
        encoded[fmt] = buffer.getvalue()
        fig.set_layout_engine("none")  # laid out once, in inches: the PDF reuses the PNG's layout
    return encoded
