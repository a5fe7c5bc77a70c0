"""Regenerate the paper tables from stored results: ``python -m replicate.tables [TABLE ...]``.

For each table and each (profile, protocol) present in the results, writes Markdown, LaTeX (booktabs) and CSV
into ``tables/generated/``: our params/FLOPs beside the published ones (in the table's own convention), the
top-1 (and top-5 on ImageNet) error as mean ± std over n seeds, the published error, the difference and a
verdict; below each table the claims the results support. Rows of other datasets or profiles are never
compared with a paper number (``not comparable``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import spec as specs
from .analysis import RowResult, collect, evaluate_claims, verdict
from .errors import cli
from .store import atomic_write_bytes

DEFAULT_OUT = specs.TABLES_DIR / "generated"


def _convention(table: specs.TableSpec, result: RowResult) -> str:
    entry = result.row.published
    if entry is not None:
        return entry.flops_convention
    from . import published

    conventions = {e.flops_convention for e in published.load() if e.source == table.published_source}
    return conventions.pop() if len(conventions) == 1 else "2xMACs"


def _error_cell(result: RowResult, metric: str) -> str:
    if result.n == 0:
        return "–"
    return f"{result.mean(metric):.2f} ± {result.std(metric):.2f}"


def frame(table: specs.TableSpec, rows: list[RowResult]) -> pd.DataFrame:
    """The table as data: one line per row."""
    imagenet = any(r.row.dataset == "imagenet" for r in rows)
    records = []
    for result in rows:
        # a run of another profile or dataset trains another network: the paper's figures do not apply
        entry = result.row.published if result.profile == "full" and result.data == result.row.dataset else None
        flops = result.macs * (2 if _convention(table, result) == "2xMACs" else 1)
        status, difference = verdict(result, table.tolerance)
        record = {
            "row": result.row.id, "model": result.row.label,
            "configuration": result.model if result.model != result.row.label else "",
            "data": result.data, "protocol": result.protocol,
            "params_M": round(result.params / 1e6, 3),
            "params_published": entry.params.text if entry and entry.params else "",
            "flops_G": round(flops / 1e9, 3),
            "flops_published": entry.flops.text if entry and entry.flops else "",
            "top1_err": _error_cell(result, "top1_err"), "n": result.n,
            "top1_err_published": entry.top1_err if entry and entry.top1_err is not None else "",
            "difference": "" if difference is None else round(difference, 2),
            "verdict": status,
        }
        if imagenet:
            record["top5_err"] = _error_cell(result, "top5_err")
            record["top5_err_published"] = entry.top5_err if entry and entry.top5_err is not None else ""
        record["note"] = _note(result, entry)
        records.append(record)
    return pd.DataFrame(records)


def _note(result: RowResult, entry) -> str:
    parts = [result.row.note] if result.row.note else []
    if entry is not None and entry.flag:
        parts.append(f"flagged ({entry.flag['kind']}): {entry.flag['explanation']}")
    if entry is None and result.row.published is not None:
        parts.append(f"{result.data}, {result.profile} profile: not compared with the paper's "
                     f"{result.row.published.top1_err}%")
    return " ".join(parts)


def render(table: specs.TableSpec, profile: str, protocol: str, rows: list[RowResult], results: Path) -> dict:
    """Markdown, LaTeX and CSV texts of one table under one (profile, protocol)."""
    data = frame(table, rows)
    claims = evaluate_claims(table, rows, results)
    caption = (f"{table.title}. Profile {profile}, protocol {protocol}; errors in %, mean ± std over n seeds "
               f"({'best test epoch' if protocol == 'paper' else 'epoch selected on a validation split'}); "
               f"tolerance max({table.tolerance['sigmas']:g} std, {table.tolerance['points']:g} points); "
               f"published numbers from README {table.published_source or '—'}.")
    claim_lines = [f"- **{c.status}** — {c.text}. {c.detail}" for c in claims]
    markdown = "\n".join([f"### {table.title}", "", caption, "", data.to_markdown(index=False), "",
                          *(["Claims:", "", *claim_lines, ""] if claim_lines else [])])
    latex = data.drop(columns=["note"]).to_latex(index=False, caption=caption, label=f"tab:{table.name}",
                                                 escape=True)
    latex = latex.replace("±", "$\\pm$")
    return {"md": markdown + "\n", "tex": latex, "csv": data.to_csv(index=False)}


def write(table_names: list[str], results: Path, out: Path) -> list[Path]:
    written = []
    for name in table_names:
        table = specs.load(name)
        for (profile, protocol), rows in collect(table, results).items():
            suffix = "" if (profile, protocol) == ("full", "paper") else f".{profile}-{protocol}"
            for extension, text in render(table, profile, protocol, rows, results).items():
                path = out / f"{table.name}{suffix}.{extension}"
                atomic_write_bytes(path, text.encode())
                written.append(path)
    return written


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.tables", description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="*", help="table names or spec files (default: every table)")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    written = write(args.tables or list(specs.available()), args.results, args.out)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
