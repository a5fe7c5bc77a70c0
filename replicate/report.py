"""One page to share: ``python -m replicate.report [TABLE ...] [--results DIR] [--out DIR]``.

Writes ``<out>/index.html``, one self-contained file (figures embedded, no script, nothing fetched when it is
viewed): every table of every setting that has results, with its caption, notes, claims (verdict, interval,
Holm-adjusted p, fragility) and the definitions of its words; the figures; what was run, run by run (setting,
seed, commit and whether the code was modified, hardware, threads); and what is missing, with the command that
would produce it. Also ``<out>/figures/``, the figures it embeds.
"""
from __future__ import annotations

import base64
import html
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import spec as specs
from . import tables
from .analysis import RowResult, collect
from .config import Setting
from .errors import HelpFormatter, Parser, check_writable_folder, cli, folder_option
from .results import DEFAULT_RESULTS, check_store
from .atomic import atomic_write_bytes

DEFAULT_OUT = Path("report")
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { padding: .25em .6em; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid #999; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.caption { color: #444; font-size: 14px; } .small { font-size: 13px; color: #555; }
.verdict { font-weight: 600; padding: 0 .35em; border-radius: 3px; }
.holds { background: #d9f0e3; } .does-not-hold { background: #f6dcdc; } .inconclusive { background: #eee; }
.fragile { background: #fbeccb; } img { max-width: 100%; } figure { margin: 1.5em 0; }
code { background: #f4f4f4; padding: 0 .25em; } dt { font-style: italic; } dd { margin: 0 0 .4em 1.5em; }
"""


def build(names: list[str], results: Path, out: Path, progress: bool = True) -> Path:
    """Write the page (and the figures it embeds) into ``out``; the page's path."""
    from . import figures

    chosen = [specs.load(name) for name in names]  # every spec valid before anything is written
    drawn = figures.render(results, out / "figures", progress=progress, say=lambda line: None)
    sections, runs, missing = [], [], []
    for table in chosen:
        for setting, rows in collect(table, results).settings.items():
            if not any(r.n for r in rows):
                continue
            sections.append(_table_section(table, setting, rows, results))
            runs += [(table, setting, result, run) for result in rows for run in result.runs]
            missing += _missing(table, setting, rows)
    body = [f"<h1>Replication report</h1><p class='small'>Written {_now()} from <code>{html.escape(str(results))}"
            f"</code>: {len(runs)} runs of {', '.join(t.name for t in chosen)}.</p>",
            *(sections or ["<p>No results yet for these tables: run one first (python -m replicate.run TABLE).</p>"]),
            _figures_section([p for p in drawn if p.suffix == ".png"]),
            _runs_section(runs), _missing_section(missing)]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Replication report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    path = out / "index.html"
    atomic_write_bytes(path, page.encode())
    return path


def _table_section(table: specs.TableSpec, setting: Setting, rows: list[RowResult], results: Path) -> str:
    found = tables.parts(table, setting, rows, results)
    shown, keys, notes = tables.display(table, rows, found.data)
    header = "".join(f"<th class='{_kind(k)}'>{html.escape(str(h))}</th>" for h, k in zip(shown.columns, keys))
    body = "".join("<tr>" + "".join(f"<td class='{_kind(k)}'>{html.escape(str(v))}</td>" for v, k in zip(line, keys))
                   + "</tr>" for line in shown.itertuples(index=False))
    parts = [f"<h2>{html.escape(table.title)}</h2>", f"<p class='caption'>{html.escape(found.caption.removeprefix(table.title + '. '))}</p>",
             f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"]
    if notes:
        parts.append("<p class='small'>" + "<br>".join(f"[{m}] {html.escape(text)}" for m, text in notes) + "</p>")
    if found.claims:
        items = []
        for claim in found.claims:
            status = tables.claim_status(claim)
            css = "fragile" if claim.fragile else claim.status.replace(" ", "-")
            line = (f"<li><span class='verdict {css}'>{html.escape(status)}</span> {html.escape(claim.text)}."
                    f"<div class='small'>{html.escape(claim.detail)}</div>")
            if claim.fragile:
                line += f"<div class='small'>Fragile: {html.escape(claim.fragile)}</div>"
            if claim.suggestion:
                line += f"<div class='small'>To resolve it: {html.escape(claim.suggestion)}</div>"
            items.append(line + "</li>")
        parts.append(f"<h3>Claims</h3><ul>{''.join(items)}</ul>")
    terms = "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(m)}</dd>" for t, m in found.glossary)
    parts.append(f"<details><summary>Definitions</summary><dl>{terms}</dl></details>")
    return "".join(parts)


def _kind(key: str) -> str:
    return "num" if tables.DISPLAY[key][1] == "r" else ""


def _figures_section(pngs: list[Path]) -> str:
    if not pngs:
        return ""
    embedded = "".join(f"<figure><img alt='{html.escape(p.stem)}' src='data:image/png;base64,"
                       f"{base64.b64encode(p.read_bytes()).decode()}'></figure>" for p in sorted(pngs))
    return f"<h2>Figures</h2>{embedded}"


def _runs_section(runs: list) -> str:
    if not runs:
        return ""
    head = ("<tr><th>table</th><th>setting</th><th>row</th><th class='num'>seed</th><th>run</th><th>commit</th>"
            "<th>hardware</th><th class='num'>threads</th><th class='num'>hours</th></tr>")
    lines = []
    for table, setting, result, run in runs:
        code = run.provenance.get("code", {}) if isinstance(run.provenance, dict) else {}
        commit = (code.get("commit") or "?")[:8] + (" (modified)" if code.get("dirty") else "")
        cells = [table.name, setting.label, result.row.id, str(run.seed), run.run_id, commit,
                 str(run.execution.get("device") or run.provenance.get("device", "")),
                 str(run.execution.get("threads", "")), f"{run.wall_time_s / 3600:.2f}"]
        lines.append("<tr>" + "".join(f"<td class='{'num' if i in (3, 7, 8) else ''}'>{html.escape(c)}</td>"
                                      for i, c in enumerate(cells)) + "</tr>")
    return f"<h2>What was run</h2><table><thead>{head}</thead><tbody>{''.join(lines)}</tbody></table>"


def _missing(table: specs.TableSpec, setting: Setting, rows: list[RowResult]) -> list[tuple[str, str]]:
    """Rows of a setting with fewer seeds than its best-covered row, and the command that would fill them."""
    most = max(len(r.values()) for r in rows)
    short = [r.row.id for r in rows if len(r.values()) < most]
    if not short:
        return []
    command = (f"python -m replicate.run {table.argument} --rows {','.join(short)} "
               f"{setting.options} --seeds {most}")
    return [(f"{table.name}, {setting.label}: {len(short)} row(s) with fewer than {most} seeds", command)]


def _missing_section(missing: list[tuple[str, str]]) -> str:
    if not missing:
        return "<h2>What is missing</h2><p>Nothing: every row of every setting shown has as many seeds as any.</p>"
    items = "".join(f"<li>{html.escape(what)}: <code>{html.escape(command)}</code></li>" for what, command in missing)
    return f"<h2>What is missing</h2><ul>{items}</ul>"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@cli
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m replicate.report", description=__doc__.split("\n")[0],
                                     formatter_class=HelpFormatter, allow_abbrev=False)
    parser.add_argument("tables", nargs="*", help="table names or spec files (default: every table with results)")
    parser.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="results store")
    parser.add_argument("--out", type=folder_option, default=DEFAULT_OUT, help="where index.html is written")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    check_store(args.results, specs.available())
    if not args.results.is_dir():
        raise tables.UserError(f"results folder {args.results} does not exist: run a table first "
                               f"(python -m replicate.run TABLE) or give --results DIR")
    check_writable_folder(args.out, "--out")
    names = args.tables or [name for name in specs.available() if (args.results / name).is_dir()]
    path = build(names, args.results, args.out, progress=not args.no_progress)
    print(f"wrote {path} (open it in a browser; figures are embedded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
