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
from .analysis import ClaimResult, RowResult, Setting, collect, evaluate_claims, verdict
from .catalog import display_name
from .config import PROFILES
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
    imagenet = any(r.row.dataset == "imagenet" for r in rows)
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


def render(table: specs.TableSpec, setting: Setting, rows: list[RowResult], results: Path) -> dict:
    """Markdown, LaTeX and CSV texts of one table under one setting (and its claims as CSV)."""
    data = frame(table, rows)
    claims = evaluate_claims(table, rows, results)
    caption = _caption(table, setting, rows, claims)
    claim_lines = []
    for claim in claims:
        claim_lines.append(f"- **{_claim_status(claim)}** — {claim.text}. {claim.detail}"
                           + (f". Fragile: {claim.fragile}" if claim.fragile else ""))
        if claim.suggestion:
            claim_lines.append(f"  - to resolve it: {claim.suggestion}")
    glossary = definitions(table, data, claims)
    markdown = "\n".join([f"### {table.title}", "", caption, "", data.to_markdown(index=False), "",
                          *(["Claims:", "", *claim_lines, ""] if claim_lines else []),
                          "Definitions:", "", *(f"- *{term}*: {meaning}" for term, meaning in glossary), ""])
    latex = data.drop(columns=["note"]).to_latex(index=False, caption=latex_escape(caption),
                                                 label=f"tab:{table.name}", escape=True)
    latex = latex.replace("±", "$\\pm$")
    block = "\n".join(["\\par\\smallskip\\footnotesize"]
                      + [f"\\textbf{{{latex_escape(_claim_status(c))}}} --- {latex_escape(c.text)}.\\par"
                         for c in claims]
                      + [f"\\emph{{{latex_escape(term)}}}: {latex_escape(meaning)}\\par" for term, meaning in glossary])
    latex = latex.replace("\\end{table}", block + "\n\\end{table}")
    claim_frame = pd.DataFrame([{"claim": c.text, "status": c.status, "fragile": c.fragile, "family": c.family,
                                 "family_size": c.family_size, "status_alone": c.raw_status, "p": c.p,
                                 "p_holm": c.p_adjusted, "detail": c.detail, "to_resolve": c.suggestion}
                                for c in claims])
    glossary_frame = pd.DataFrame(glossary, columns=["term", "meaning"])
    return {"md": markdown + "\n", "tex": latex, "csv": data.to_csv(index=False),
            "claims.csv": claim_frame.to_csv(index=False), "definitions.csv": glossary_frame.to_csv(index=False)}


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
    "flagged": "the printed number is known to disagree with the authors' code or files (the note says why); "
               "the word in brackets is the verdict it gets all the same",
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
    glossary.append(("published error", "one training run reported at its best test epoch (the authors select "
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


def _claim_status(claim: ClaimResult) -> str:
    return f"{claim.status}, fragile" if claim.fragile else claim.status


def trained_words(setting: Setting, rows: list[RowResult]) -> str:
    """What was trained for this table, in words: a proxy names itself; the paper's setting its datasets."""
    profile = PROFILES.get(setting.profile)
    if profile is not None and (profile.is_proxy or profile.synthetic):
        return profile.trained()
    datasets = dict.fromkeys(display_name(r.row.dataset) for r in rows)
    return f"the paper's recipe on {', '.join(datasets)}"


def _caption(table: specs.TableSpec, setting: Setting, rows: list[RowResult], claims: list[ClaimResult]) -> str:
    verdicts, source = table.verdicts, table.source
    paper_rows = dict.fromkeys(f"{display_name(r.row.dataset)} {r.row.model.config.base_name}" for r in rows)
    selection = "best test epoch" if setting.protocol == "paper" else "epoch selected on a validation split"
    text = (f"{table.title}. Trained here: {trained_words(setting, rows)} ({setting.label}); paper rows: "
            f"{', '.join(paper_rows)}. Errors in %, mean ± std over n seeds ({selection}), "
            f"{verdicts.confidence:.0%} t-interval of the mean; within tolerance: the whole interval within "
            f"{verdicts.tolerance:g} points of the published error; published numbers: "
            f"{source.citation if source else '—'}"
            + ("; released: the authors' checkpoint of the row, re-evaluated here" if any(r.released for r in rows)
               else "") + ".")
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
