"""``python -m replicate.figures``: draw the figures, or ``--check`` whether they are up to date."""
from __future__ import annotations

import sys
from pathlib import Path

from .. import spec as specs
from ..errors import Parser, check_writable_folder, cli, folder_option
from ..results import DEFAULT_RESULTS, check_store
from . import check, render

DEFAULT_OUT = Path("figures")
PAPER_OUT = DEFAULT_OUT / "paper"


@cli
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m replicate.figures",
                                     description="Draw the paper's figures (PNG and PDF) from stored results, "
                                                 "or check that they are up to date.", allow_abbrev=False)
    parser.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, metavar="DIR",
                        help="the results folder the runs wrote (default: %(default)s)")
    parser.add_argument("--out", type=folder_option, default=None, metavar="DIR",
                        help=f"where the figures go (default: {DEFAULT_OUT}, or {PAPER_OUT} with --style paper, "
                             f"under the working directory)")
    parser.add_argument("--style", choices=("report", "paper"), default="report",
                        help="report: 7 in wide, title and notes inside; paper: one column (3.25 in), 7 pt text, "
                             "title and notes in <figure>.caption.md beside it, figures without data not drawn "
                             "(default: %(default)s)")
    parser.add_argument("--curves", nargs="+", metavar="TABLE",
                        help="draw the training curves of these tables (names or spec files) "
                             "instead of every table with runs")
    parser.add_argument("--check", action="store_true",
                        help="draw nothing; exit 1 if a figure is missing or older than its inputs or code")
    parser.add_argument("--prune", action="store_true",
                        help="remove figure files an earlier run drew that this run does not draw")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = PAPER_OUT if args.style == "paper" else DEFAULT_OUT
    check_store(args.results, specs.available())  # before any figure is drawn, not between two of them
    if args.check:
        stale = check(args.results, args.out, args.curves)
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print(f"{len(stale)} figure(s) out of date: run python -m replicate.figures", file=sys.stderr)
            return 1
        print(f"figures in {args.out} are up to date")
        return 0
    check_writable_folder(args.out, "--out")
    written = render(args.results, args.out, args.curves, progress=not args.no_progress, prune=args.prune,
                     look=args.style)
    print(f"wrote {len(written)} files to {args.out}")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
