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
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import published
from . import spec as specs
from . import stats
from .analysis import ClaimResult, RowResult, collect, decide_claims, verdict
from .catalog import DATASETS as CATALOG
from .catalog import display_name
from .config import PROFILES, Setting
from .errors import Parser, UserError, check_writable_folder, cli, folder_option
from .results import DEFAULT_RESULTS, check_store
from .atomic import atomic_write_bytes

DEFAULT_OUT = Path("tables") / "generated"


def _convention(table: specs.TableSpec, result: RowResult) -> str:
    entry = result.row.published
    if entry is not None:
        return entry.flops_convention
    source = table.source
    return source.flops_convention if source else "2xMACs"


def _error_cell(result: RowResult, metric: str) -> str:
    if not result.values(metric):
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
    top5 = any(CATALOG[r.row.dataset].top5 for r in rows)
    released = any(r.released for r in rows)
    records = []
    for result in rows:
        entry = result.row.published if result.comparable else None
        flops = published.to_flops(result.macs, _convention(table, result))
        judged = verdict(result, table.verdicts)
        bn_batch = _bn_batch(result)
        record = {
            "row": result.row.id, "paper_row": result.row.label, "trained": result.model.label,
            "data": result.data, "protocol": result.setting.protocol,
            "params_M": round(result.params / 1e6, 3),
            "params_published": entry.params.text if entry and entry.params else "",
            "flops_G": round(flops / 1e9, 3),
            "flops_published": entry.flops.text if entry and entry.flops else "",
            "top1_err_published": entry.top1_err if entry and entry.top1_err is not None else "",
            **({"top1_err_released": _released_cell(result)} if released else {}),
            "top1_err": _error_cell(result, "top1_err"), "n": len(result.values()),
            "top1_err_ci": _interval_cell(result, table.verdicts.confidence),
            "difference": "" if judged.difference is None else round(judged.difference, 2),
            "verdict": judged.status,
        }
        if top5:
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
    from .config import describe_overrides  # (issue 28: what a custom recipe overrode, said in the row's note)

    parts = [result.row.note] if result.row.note else []
    overridden = {**dict(result.row.overrides), **dict(result.setting.overrides)}
    if overridden:
        parts.append(f"custom recipe ({describe_overrides(overridden)}): not the paper's recipe, never compared "
                     f"with its numbers")
    diverged = result.diverged()
    if diverged:
        parts.append(f"seed{'s' if len(diverged) > 1 else ''} {', '.join(map(str, diverged))} diverged "
                     f"(no finite error; left out of the mean)")
    if entry is not None and entry.flag:
        parts.append(f"flagged ({entry.flag['kind']}): {entry.flag['explanation']}")
    if entry is None and result.row.published is not None and result.n:
        parts.append(f"{result.data}, {result.setting.label}: not compared with the paper's "
                     f"{result.row.published.top1_err}%")
    paper_batch = result.runs[0].config.recipe.per_gpu_batch if result.runs else None
    if result.comparable and bn_batch and bn_batch != str(paper_batch):
        parts.append(f"BatchNorm saw {bn_batch} images per GPU, the paper's runs {paper_batch}")
    return " ".join(parts)


# How the data's columns print in the Markdown and LaTeX tables (the CSV keeps every column as data): the header
# with its unit ("\n" breaks a LaTeX header into lines), and the alignment. Columns not named here (data,
# protocol, bn_batch, note) are said once in the caption or as notes under the table.
DISPLAY = {
    "row": ("Row", "l"),
    "paper_row": ("Paper row", "l"),
    "trained": ("Trained", "l"),
    "params_M": ("Params\n(M)", "r"),
    "params_published": ("Params,\npaper", "r"),
    "flops_G": ("FLOPs\n(G, {convention})", "r"),
    "flops_published": ("FLOPs,\npaper", "r"),
    "top1_err": ("Top-1 err.\n(%)", "r"),
    "n": ("n", "r"),
    "top1_err_ci": ("{level}\nCI", "r"),
    "top1_err_published": ("Top-1 err.,\npaper (%)", "r"),
    "top1_err_released": ("Top-1 err.,\nreleased (%)", "r"),
    "top5_err": ("Top-5 err.\n(%)", "r"),
    "top5_err_published": ("Top-5 err.,\npaper (%)", "r"),
    "difference": ("Diff.\n(points)", "r"),
    "verdict": ("Verdict", "l"),
}
CONVENTIONS = {"2xMACs": "2×MACs", "MACs": "MACs"}


def display(table: specs.TableSpec, rows: list[RowResult], data: pd.DataFrame,
            latex: bool = False) -> tuple[pd.DataFrame, list[str], list[tuple[str, str]]]:
    """The table as printed: headers with units, numbers with few decimals, a mark on each row with a note,
    columns empty in every row dropped; and the notes as (mark, text). The row id stays in Markdown only."""
    marks: dict[str, str] = {}
    for note in data["note"]:
        if note and note not in marks:
            marks[note] = "abcdefghijklmnopqrstuvwxyz"[len(marks) % 26]
    shown = data.copy()
    for column, kind in (("params_M", "size"), ("flops_G", "size"), ("top1_err_published", "err"),
                         ("top5_err_published", "err"), ("difference", "diff")):
        if column in shown:
            shown[column] = [_number(v, kind) for v in shown[column]]
    labels = _row_labels(rows)
    mark = (lambda m: f"\\textsuperscript{{{m}}}") if latex else (lambda m: f" [{m}]")
    shown["paper_row"] = [(latex_escape(label) if latex else label) + (mark(marks[note]) if note else "")
                          for label, note in zip(labels, data["note"])]
    shown["trained"] = [r.model.name for r in rows]
    proxy_depth = all(r.model == r.row.model.at_depth(r.model.config.depth) for r in rows) and \
        any(r.model != r.row.model for r in rows)  # the caption says "ResNet20 variants"
    if all(r.model.name == r.row.model.name for r in rows) or proxy_depth:
        shown = shown.drop(columns=["trained"])
    if set(data["verdict"]) <= {"not comparable", "not run"}:  # said once, in the caption
        shown = shown.drop(columns=["verdict"])
    counts = {n for n in data["n"] if n}
    if not counts or (latex and len(counts) == 1):  # LaTeX: one seed count is said in the Top-1 header
        shown = shown.drop(columns=["n"])
    if latex:  # the verdict and both numbers are there; the difference stays in Markdown and CSV
        shown = shown.drop(columns=["difference"])
        if "verdict" in shown:  # "flagged (better)" -> "better": the row's note mark says it is flagged, and why
            shown["verdict"] = [v[len("flagged ("):-1] if v.startswith("flagged (") else v for v in shown["verdict"]]
    keep = [c for c in DISPLAY if c in shown and not (latex and c == "row")
            and not all(str(v) in ("", "nan", "–") for v in shown[c])]
    shown = shown[keep]
    conventions = {_convention(table, r) for r in rows}
    convention = CONVENTIONS.get(conventions.pop(), "") if len(conventions) == 1 else "source's convention"
    level = f"{table.verdicts.confidence:.0%}".replace("%", " %")
    headers = [DISPLAY[c][0].format(convention=convention, level=level) for c in keep]
    if latex and len(counts) == 1 and "top1_err" in keep:
        n = counts.pop()
        headers[keep.index("top1_err")] = f"Top-1 err.\n(%), mean\n± std, n={n}"
    shown.columns = headers if latex else [h.replace("\n", " ") for h in headers]
    return shown, keep, [(m, note) for note, m in marks.items()]


def _row_labels(rows: list[RowResult]) -> list[str]:
    """The printed label of each row, with what tells apart rows that share one ("ResNet56-S16U1 +
    orthogonality, no unshared BN")."""
    labels = [r.row.label for r in rows]
    return [label + (r.row.training_changes if labels.count(label) > 1 else "") for label, r in zip(labels, rows)]


def _number(value, kind: str) -> str:
    """Params/FLOPs: 3 decimals below 1, 2 above; errors 2 decimals; a difference signed."""
    if value == "" or value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if kind == "size":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    if kind == "diff":
        return f"{value:+.2f}".replace("-", "−")
    return f"{value:.2f}"


@dataclass(frozen=True)
class Parts:
    """What one table under one setting says, before any format: its data, claims, caption and definitions."""

    data: pd.DataFrame
    claims: list[ClaimResult]
    caption: str
    glossary: list[tuple[str, str]]


def parts(table: specs.TableSpec, setting: Setting, rows: list[RowResult], results: Path) -> Parts:
    data = frame(table, rows)
    claims = decide_claims(table, rows, results)
    caption = _caption(table, setting, rows, claims)
    if set(data["verdict"]) == {"not run"}:
        caption += " No results yet: the published numbers only."
    elif set(data["verdict"]) <= {"not comparable", "not run"}:
        caption += " No row is set beside a published error: every one is not comparable (another setting)."
    return Parts(data, claims, caption, definitions(table, data, claims))


def render(table: specs.TableSpec, setting: Setting, rows: list[RowResult], results: Path) -> dict:
    """Markdown, LaTeX and CSV texts of one table under one setting (and its claims and definitions as CSV)."""
    found = parts(table, setting, rows, results)
    data, claims, caption, glossary = found.data, found.claims, found.caption, found.glossary
    claim_frame = pd.DataFrame([{"claim": c.text, "status": c.status, "fragile": c.fragile, "family": c.family,
                                 "family_size": c.family_size, "status_alone": c.raw_status, "p": c.p,
                                 "p_holm": c.p_adjusted, "detail": c.detail, "to_resolve": c.suggestion}
                                for c in claims],
                                columns=["claim", "status", "fragile", "family", "family_size", "status_alone", "p",
                                         "p_holm", "detail", "to_resolve"])
    glossary_frame = pd.DataFrame(glossary, columns=["term", "meaning"])
    return {"md": _markdown(table, rows, data, claims, caption, glossary),
            "tex": _latex(table, setting, rows, data, claims, caption, glossary),
            "csv": data.to_csv(index=False), "claims.csv": claim_frame.to_csv(index=False),
            "definitions.csv": glossary_frame.to_csv(index=False)}


def _markdown(table, rows, data, claims, caption, glossary) -> str:
    shown, keys, notes = display(table, rows, data)
    claim_lines = []
    for claim in claims:
        claim_lines.append(f"- **{claim_status(claim)}** — {claim.text}. {claim.detail}"
                           + (f". Fragile: {claim.fragile}" if claim.fragile else ""))
        if claim.suggestion:
            claim_lines.append(f"  - to resolve it: {claim.suggestion}")
    align = ["right" if DISPLAY[key][1] == "r" else "left" for key in keys]
    return "\n".join([f"### {table.title}", "", caption.removeprefix(f"{table.title}. "), "",
                      shown.to_markdown(index=False, colalign=align), "",
                      *(["Notes:", "", *(f"- [{m}] {text}" for m, text in notes), ""] if notes else []),
                      *(["Claims:", "", *claim_lines, ""] if claim_lines else []),
                      "Definitions:", "", *(f"- *{term}*: {meaning}" for term, meaning in glossary), ""]) + "\n"


def _latex(table, setting, rows, data, claims, caption, glossary) -> str:
    """A full-width float (``table*``: a column of a two-column paper is too narrow for it; in a one-column
    document it is a plain table), booktabs, numbers right-aligned, two-line headers (a nested tabular: no package beyond booktabs), notes
    and claims under the table, a label unique per table and setting."""
    shown, keys, notes = display(table, rows, data, latex=True)
    align = "".join(DISPLAY[key][1] for key in keys)
    head = " & ".join(_latex_header(header, DISPLAY[key][1]) for header, key in zip(shown.columns, keys))
    body = [" & ".join(_latex_cell(value) for value in line) + " \\\\" for line in shown.itertuples(index=False)]
    label = f"tab:{table.name}{setting.suffix.replace('.', '-')}"
    under = [f"\\textsuperscript{{{m}}}{latex_escape(text)}\\par" for m, text in notes]
    for claim in claims:
        under.append(f"\\textbf{{{latex_escape(claim_status(claim))}}}: {latex_escape(claim.text)}"
                     f" ({latex_escape(_claim_numbers(claim))})\\par")
    under += [f"\\emph{{{latex_escape(term)}}}: {latex_escape(meaning)}\\par" for term, meaning in glossary]
    caption = re.sub(r"^Table (\d+) — (.*?)\. ", r"\2 (the paper's Table \1). ", caption)  # LaTeX numbers its own
    return "\n".join(["\\begin{table*}", "\\centering", "\\footnotesize", f"\\caption{{{latex_escape(caption)}}}",
                      f"\\label{{{label}}}", "\\setlength{\\tabcolsep}{3pt}", f"\\begin{{tabular}}{{{align}}}",
                      "\\toprule", head + " \\\\", "\\midrule", *body, "\\bottomrule", "\\end{tabular}",
                      "\\par\\smallskip\\footnotesize\\raggedright", *under, "\\end{table*}", ""])


def _latex_header(header: str, align: str) -> str:
    """A header of two lines as a nested tabular aligned like its column."""
    lines = [latex_escape(part) for part in header.split("\n")]
    if len(lines) == 1:
        return lines[0]
    return f"\\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}" + " \\\\ ".join(lines) + "\\end{tabular}"


def _latex_cell(value) -> str:
    """Cell text escaped, except the note marks that ``display`` wrote as LaTeX."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text if "\\textsuperscript{" in text else latex_escape(text)  # a marked label is LaTeX already


def _claim_numbers(claim: ClaimResult) -> str:
    """The claim's numbers in brief, for the LaTeX block: its adjusted p and, when fragile, that it is."""
    parts = []
    if claim.p_adjusted is not None:
        parts.append(f"Holm-adjusted p = {stats.format_p(claim.p_adjusted)}, family of {claim.family_size}")
    if claim.fragile:
        parts.append(f"fragile: {claim.fragile}")
    return "; ".join(parts) or claim.detail.split(";")[0]


ROW_WORDS = {
    "within tolerance": "our whole t-interval lies within ± the tolerance of the published error",
    "better": "our whole interval lies below the published error (a lower error)",
    "worse": "our whole interval lies above the published error",
    "inconclusive": "for a row: the interval is too wide to say any of these (with one seed, n=1, there is no "
                    "interval); for a claim: the adjusted test decides neither way, or a row has fewer than 2 "
                    "seeds, or every per-seed difference is the same (zero spread: a zero-width interval proves "
                    "nothing)",
    "not comparable": "trained in another setting than the published number (another dataset, network, scale "
                      "or recipe): never set beside it",
    "flagged": "the printed number is known to disagree with the authors' code or files (the row's note says "
               "why); the row gets its verdict all the same",
    "not run": "no finished run of the row (or of a claim's rows) in this setting",
}
CLAIM_WORDS = {
    "holds": "after Holm's adjustment the test shows the difference the claim states (for \"matches or beats\": "
             "worse by less than the margin, and with fewer parameters where the claim says so)",
    "does not hold": "after the adjustment the test shows the opposite (for \"matches or beats\": worse by more "
                     "than the margin)",
    "fragile": "decided, but the decision changes under another reasonable analysis: the final epoch instead "
               "of the selected one, or not pairing by seed (Welch)",
    "not evaluated (synthetic)": "synthetic data: its numbers say nothing about the paper's claims",
}


def definitions(table: specs.TableSpec, data: pd.DataFrame, claims: list[ClaimResult]) -> list[tuple[str, str]]:
    """(term, meaning) for every verdict word the table uses, the sign of a difference, the margin, what a
    published number is and, for claims, pairing and the family adjustment: read where the table is read."""
    used = {str(v).split(" (")[0] for v in data["verdict"]} | {c.status for c in claims}
    used |= {"fragile"} if any(c.fragile for c in claims) else set()
    words = {**ROW_WORDS, **CLAIM_WORDS}
    glossary = [(word, words[word]) for word in words if word in used]
    glossary.append(("difference", "a row against the paper: ours − published; a claim: its first row − its "
                                   "second, in points of error (negative: the first row has the lower error)"))
    glossary.append(("published error", "(the \"paper\" columns) one training run reported at its best test epoch (the authors select "
                                        "on the test set): an optimistic single number, not a mean over seeds"))
    if any(c.relation == "not_worse" for c in table.claims):
        glossary.append(("margin", f"{table.verdicts.margin:g} points: \"matches or beats\" holds when the first "
                                   f"row is provably worse by less than this. A convention of this suite, fixed "
                                   f"in the spec before any run: a loss that small would not change the paper's "
                                   f"conclusion that sharing costs no accuracy"))
    if claims:
        glossary.append(("paired", "runs with the same seed see the same data order and augmentation, so a claim "
                                   "compares per-seed differences on the seeds both rows have (the others are "
                                   "named as left out); Welch's unpaired interval when fewer than 2 are shared"))
        glossary.append(("Holm", "the step-down adjustment that keeps the chance of any false decision within a "
                                 "family at the stated level; the claims marked primary (registered before their "
                                 "runs) are one family, the others a second"))
    if any(c.text.startswith("on this proxy") for c in claims):
        glossary.append(("on this proxy", "a verdict on the reduced setting named in the caption: what the proxy "
                                          "shows, not what the paper's dataset at the paper's scale would"))
    return glossary


def latex_escape(text: str) -> str:
    """Text for LaTeX: its special characters escaped (captions and notes hold %, _, & and the like)."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "±": r"$\pm$", "−": r"$-$", "≈": r"$\approx$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}
    return "".join(replacements.get(ch, ch) for ch in text)


def claim_status(claim: ClaimResult) -> str:
    return f"{claim.status}, fragile" if claim.fragile else claim.status


def trained_words(setting: Setting, rows: list[RowResult]) -> str:
    """What was trained for this table, in words: a proxy names itself; the paper's setting its datasets."""
    profile = PROFILES.get(setting.profile)
    if profile is not None and (profile.is_proxy or profile.synthetic):
        return profile.trained()
    datasets = dict.fromkeys(display_name(r.row.dataset) for r in rows)
    return f"the paper's recipe on {', '.join(datasets)}"


def _hardware(rows: list[RowResult]) -> str:
    """"cpu (x86_64, 1 threads): 58 runs; cpu (x86_64, 2 threads): 22 runs" when the runs did not all run on one
    kind of device and thread count; "" otherwise."""
    counts: dict[str, int] = {}
    for run in (run for result in rows for run in result.runs):
        where = str(run.execution.get("device") or run.provenance.get("device") or "unknown")
        counts[where] = counts.get(where, 0) + 1
    return "; ".join(f"{where}: {n} runs" for where, n in sorted(counts.items())) if len(counts) > 1 else ""


def _caption(table: specs.TableSpec, setting: Setting, rows: list[RowResult], claims: list[ClaimResult]) -> str:
    verdicts, source = table.verdicts, table.source
    paper_rows = dict.fromkeys(f"{display_name(r.row.dataset)} {r.row.model.config.base_name}" for r in rows)
    selection = "best test epoch" if setting.protocol == "paper" else "epoch selected on a validation split"
    conventions = {_convention(table, r) for r in rows}
    flops = ("counted as 2×MACs (a multiply-add counts as two)" if conventions == {"2xMACs"} else
             "counted as MACs" if conventions == {"MACs"} else "each in its source's convention (2×MACs or MACs)")
    text = (f"{table.title}. Trained here: {trained_words(setting, rows)} ({setting.label}); paper rows: "
            f"{', '.join(paper_rows)}. Params in millions; FLOPs in billions, {flops}. "
            f"Errors in %, mean ± std over n seeds ({selection}), "
            f"{verdicts.confidence:.0%} t-interval of the mean; within tolerance: the whole interval within "
            f"{verdicts.tolerance:g} points of the published error; published numbers: "
            f"{source.citation if source else '—'}"
            + ("; released: the authors' checkpoint of the row, re-evaluated here" if any(r.released for r in rows)
               else "") + ".")
    hardware = _hardware(rows)
    if hardware:
        text += f" Seeds ran on different hardware ({hardware}): a seed repeats exactly only where it ran."
    tested = [c for c in claims if c.family_size]
    if tested:
        one_sided = 100 * (1 - verdicts.confidence) / 2
        families = dict.fromkeys((c.family, c.family_size) for c in tested)
        named = ", ".join(f"{'the ' + f + ' family' if f else 'one family'} of {m}" for f, m in families)
        text += (f" Claims: each a two-sided test at {100 * (1 - verdicts.confidence):g} % ({one_sided:g} % "
                 f"one-sided per direction), decided after Holm's adjustment within its family ({named}).")
    return text
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
    parser = Parser(prog="python -m replicate.tables", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    parser.add_argument("tables", nargs="*", help="table names or spec files (default: every shipped table)")
    parser.add_argument("--results", type=folder_option, default=DEFAULT_RESULTS, help="results store")
    parser.add_argument("--out", type=folder_option, default=DEFAULT_OUT, help="where the tables are written")
    args = parser.parse_args(argv)
    check_store(args.results)
    if not args.results.is_dir():
        raise UserError(f"results folder {args.results} does not exist: run a table first "
                        f"(python -m replicate.run TABLE) or give --results DIR")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: give a folder for the tables")
    check_writable_folder(args.out, "--out")
    names = args.tables or list(specs.available())
    tables = [specs.load(name) for name in names]  # every spec found and valid before anything is written
    check_store(args.results, [table.name for table in tables])
    written = write(tables, args.results, args.out, warn=lambda line: print(line, file=sys.stderr))
    print(f"wrote {len(written)} files to {args.out}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
