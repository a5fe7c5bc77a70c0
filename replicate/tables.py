"""Regenerate the paper tables from stored results: python -m replicate.tables [TABLE ...].

For each table and each setting (profile, protocol, precision) present in the results, writes Markdown,
LaTeX (booktabs) and CSV into ``tables/generated/`` (under the working directory): our params/FLOPs beside
the published ones (in the table's own convention), the top-1 (and top-5 on ImageNet) error as mean ± std
over n seeds with its confidence interval, the published error, the difference and a verdict; below each
table the claims the results decide, each with its paired (or Welch) interval. Rows of other datasets or
profiles are never compared with a paper number (``not comparable``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import published
from . import spec as specs
from . import stats
from .analysis import RowResult, Setting, collect, evaluate_claims, verdict
from .errors import UserError, cli, folder_option
from .results import DEFAULT_RESULTS
from .store import atomic_write_bytes

DEFAULT_OUT = Path("tables") / "generated"


def _convention(table: specs.TableSpec, result: RowResult) -> str:
    entry = result.row.published
    if entry is not None:
        return entry.flops_convention
    source = table.source
    return source.flops_convention if source else "2xMACs"


def _error_cell(result: RowResult, metric: str) -> str:
    if result.n == 0:
        return "–"
    return f"{result.mean(metric):.2f} ± {result.std(metric):.2f}"


def _interval_cell(result: RowResult, confidence: float) -> str:
    values = result.values()
    if not values:
        return ""
    _, low, high = stats.interval(values, confidence)
    return "" if low is None else f"[{low:.2f}, {high:.2f}]"


def frame(table: specs.TableSpec, rows: list[RowResult]) -> pd.DataFrame:
    """The table as data: one line per row."""
    imagenet = any(r.row.dataset == "imagenet" for r in rows)
    released = any(r.released for r in rows)
    records = []
    for result in rows:
        entry = result.row.published if result.comparable else None
        flops = published.to_flops(result.macs, _convention(table, result))
        judged = verdict(result, table.verdicts)
        bn_batch = _bn_batch(result)
        record = {
            "row": result.row.id, "model": result.row.label,
            "configuration": result.model.label if result.model.label != result.row.label else "",
            "data": result.data, "protocol": result.setting.protocol,
            "params_M": round(result.params / 1e6, 3),
            "params_published": entry.params.text if entry and entry.params else "",
            "flops_G": round(flops / 1e9, 3),
            "flops_published": entry.flops.text if entry and entry.flops else "",
            "top1_err_published": entry.top1_err if entry and entry.top1_err is not None else "",
            **({"top1_err_released": _released_cell(result)} if released else {}),
            "top1_err": _error_cell(result, "top1_err"), "n": result.n,
            "top1_err_ci": _interval_cell(result, table.verdicts.confidence),
            "difference": "" if judged.difference is None else round(judged.difference, 2),
            "verdict": judged.status,
        }
        if imagenet:
            record["top5_err"] = _error_cell(result, "top5_err")
            record["top5_err_published"] = entry.top5_err if entry and entry.top5_err is not None else ""
        record["bn_batch"] = bn_batch
        record["note"] = _note(result, entry, bn_batch)
        records.append(record)
    return pd.DataFrame(records)


def _released_cell(result: RowResult) -> str:
    """The authors' released weights of the row, re-evaluated here (``replicate.evaluate``)."""
    return "" if result.released is None else f"{result.released.selected.top1_err:.2f}"


def _bn_batch(result: RowResult) -> str:
    """Images per BatchNorm (per GPU) in the runs: the paper's ImageNet runs had 128 (512 over 4 GPUs)."""
    batches = sorted({r.execution.get("bn_batch") for r in result.runs if r.execution.get("bn_batch")})
    return ", ".join(str(b) for b in batches)


def _note(result: RowResult, entry, bn_batch: str) -> str:
    parts = [result.row.note] if result.row.note else []
    if entry is not None and entry.flag:
        parts.append(f"flagged ({entry.flag['kind']}): {entry.flag['explanation']}")
    if entry is None and result.row.published is not None and result.n:
        parts.append(f"{result.data}, {result.setting.label}: not compared with the paper's "
                     f"{result.row.published.top1_err}%")
    paper_batch = result.runs[0].config.recipe.per_gpu_batch if result.runs else None
    if result.comparable and bn_batch and bn_batch != str(paper_batch):
        parts.append(f"BatchNorm saw {bn_batch} images per GPU, the paper's runs {paper_batch}")
    return " ".join(parts)


def render(table: specs.TableSpec, setting: Setting, rows: list[RowResult], results: Path) -> dict:
    """Markdown, LaTeX and CSV texts of one table under one setting."""
    data = frame(table, rows)
    claims = evaluate_claims(table, rows, results)
    verdicts = table.verdicts
    source = table.source
    caption = (f"{table.title}. {setting.label.capitalize()}; errors in %, mean ± std over n seeds "
               f"({'best test epoch' if setting.protocol == 'paper' else 'epoch selected on a validation split'}), "
               f"{verdicts.confidence:.0%} t-interval of the mean; within tolerance: the whole interval within "
               f"{verdicts.tolerance:g} points of the published error; published numbers: "
               f"{source.citation if source else '—'}"
               + ("; released: the authors' checkpoint of the row, re-evaluated here." if any(r.released for r in rows)
                  else "."))
    claim_lines = []
    for claim in claims:
        claim_lines.append(f"- **{claim.status}** — {claim.text}. {claim.detail}")
        if claim.suggestion:
            claim_lines.append(f"  - to resolve it: {claim.suggestion}")
    markdown = "\n".join([f"### {table.title}", "", caption, "", data.to_markdown(index=False), "",
                          *(["Claims:", "", *claim_lines, ""] if claim_lines else [])])
    latex = data.drop(columns=["note"]).to_latex(index=False, caption=caption, label=f"tab:{table.name}",
                                                 escape=True)
    latex = latex.replace("±", "$\\pm$")
    return {"md": markdown + "\n", "tex": latex, "csv": data.to_csv(index=False)}


def write(tables: list[specs.TableSpec], results: Path, out: Path, warn=print) -> list[Path]:
    """Render every table (every setting it has results for) into ``out``; the files written."""
    written = []
    for table in tables:
        collected = collect(table, results)
        for folder in collected.corrupt:
            warn(f"warning: {folder.result_file} is unreadable: its run counts as not run (a relaunch redoes it)")
        if not any(r.n or r.released for rows in collected.settings.values() for r in rows):
            warn(f"note: no results for {table.name} in {results / table.name}: the table shows the published "
                 f"numbers only")
        for setting, rows in collected.settings.items():
            for extension, text in render(table, setting, rows, results).items():
                path = out / f"{table.name}{setting.suffix}.{extension}"
                atomic_write_bytes(path, text.encode())
                written.append(path)
    return written


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replicate.tables", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("tables", nargs="*", help="table names or spec files (default: every shipped table)")
    parser.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="results store")
    parser.add_argument("--out", type=folder_option, default=DEFAULT_OUT, help="where the tables are written")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        raise UserError(f"results folder {args.results} does not exist: run a table first "
                        f"(python -m replicate.run TABLE) or give --results DIR")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: give a folder for the tables")
    names = args.tables or list(specs.available())
    tables = [specs.load(name) for name in names]  # every spec found and valid before anything is written
    written = write(tables, args.results, args.out, warn=lambda line: print(line, file=sys.stderr))
    print(f"wrote {len(written)} files to {args.out}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
