"""From stored results back to the rows of a table: per-row aggregates over seeds, verdicts and the claims.

A result belongs to a row when the row, resolved with the result's own profile, protocol, precision and seed,
gives the result's run id: so a result of another dataset, profile or configuration can never land in a paper
row. Results are grouped by :class:`Setting`; each setting is a table of its own, never mixed with another.
Every comparison is a Student-t interval (``stats``): claims pair rows by seed, and a row is set against its
published error only with an interval around our mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import spec as specs
from . import stats
from .catalog import display_name
from .complexity import lookup
from .config import PROFILES, Setting, Verdicts
from .plan import run_config
from .results import RunFolder, RunResult, runs
from .zoo import ModelSpec


@dataclass(frozen=True)
class RowResult:
    """All finished runs of one row under one setting, aggregated over seeds."""

    row: specs.Row
    setting: Setting
    data: str  # what the runs trained on: the row's dataset, fashion-mnist, or synthetic
    model: ModelSpec  # the network trained (the mini profile trains a shallower one than the row's)
    params: int
    macs: int
    runs: tuple[RunResult, ...] = ()
    released: RunResult | None = None  # the authors' checkpoint of this row, re-evaluated (``evaluate``)

    @property
    def n(self) -> int:
        return len(self.runs)

    def values(self, metric: str = "top1_err", stage: str = "selected") -> dict[int, float]:
        """Per seed: the metric of each run (runs without it, or diverged to NaN/inf, are left out)."""
        found = {r.seed: getattr(getattr(r, stage), metric) for r in self.runs}
        return {seed: float(v) for seed, v in found.items() if v is not None and math.isfinite(v)}

    def diverged(self, metric: str = "top1_err", stage: str = "selected") -> list[int]:
        """Seeds whose run ended without a finite metric (NaN or inf): diverged, shown as such, never averaged."""
        return sorted(r.seed for r in self.runs
                      if (v := getattr(getattr(r, stage), metric)) is not None and not math.isfinite(v))

    def mean(self, metric: str = "top1_err", stage: str = "selected") -> float:
        values = list(self.values(metric, stage).values())
        return float(np.mean(values)) if values else float("nan")

    def std(self, metric: str = "top1_err", stage: str = "selected") -> float:
        values = list(self.values(metric, stage).values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    @property
    def paper_rows(self) -> str:
        """The paper's setting of the row: "CIFAR-10 ResNet56"."""
        return f"{display_name(self.row.dataset)} {self.row.model.config.base_name}"

    @property
    def trained_as(self) -> str:
        """What the runs trained, in words a figure can print: "CIFAR-10 ResNet56" in the paper's setting,
        "Fashion-MNIST proxy: ResNet20" for a proxy (never the paper's dataset for another one's runs)."""
        trained = f"{display_name(self.data)} {self.model.config.base_name}"
        if self.synthetic or trained != self.paper_rows or PROFILES[self.setting.profile].is_proxy:
            return f"{display_name(self.data)} {'' if self.synthetic else 'proxy: '}{self.model.config.base_name}"
        return trained

    @property
    def at_paper_scale(self) -> bool:
        """Trained in the row's own setting at the paper's scale: the full recipe, not overridden (no ``--set``, no
        ``set:``), the row's dataset and precision."""
        return (self.setting.profile == "full" and self.data == self.row.dataset
                and self.setting.precision == self.row.training.precision
                and not self.setting.overrides and not self.row.overrides)

    @property
    def comparable(self) -> bool:
        """Only runs at the paper's scale may be set beside a published number (when there is one)."""
        return self.at_paper_scale and self.row.published is not None


@dataclass(frozen=True)
class Collected:
    """A table's results: row aggregates per setting, and the run folders whose result is unreadable."""

    settings: dict[Setting, list[RowResult]]
    corrupt: tuple[RunFolder, ...] = ()


def collect(table: specs.TableSpec, results: Path) -> Collected:
    """Row aggregates for the paper's setting (always) and every setting present in the results."""
    stored, corrupt = runs(results, table.name)
    trained = [r for r in stored if r.kind == "trained"]
    by_id = {r.run_id: r for r in trained}
    rows = {row.id: row for row in table.rows}
    released = {(r.row, _setting(r, rows)): r for r in stored if r.kind == "released"}
    paper = Setting("full", table.rows[0].protocol, table.rows[0].training.precision)
    found = {_setting(r, rows) for r in stored}
    order = list(PROFILES)
    settings = [paper] + sorted(found - {paper}, key=lambda s: (order.index(s.profile) if s.profile in order
                                                                 else len(order), s))
    seeds = sorted({r.seed for r in trained}) or [0]
    collected = {}
    for setting in settings:
        profile = PROFILES.get(setting.profile)
        if profile is not None:
            collected[setting] = [_row_result(row, setting, profile, seeds, by_id, released.get((row.id, setting)))
                                  for row in table.rows if profile.applies(row.dataset)]
    return Collected(collected, tuple(corrupt))


def _setting(result: RunResult, rows: dict[str, specs.Row]) -> Setting:
    """The setting a result was trained under; its overrides are those of the command line (``--set``): a row's
    own ``set:`` belongs to the row, in every setting."""
    own = dict(rows[result.row].overrides) if result.row in rows else {}
    overrides = tuple((key, value) for key, value in result.config.overrides if own.get(key) != value)
    return replace(Setting.of(result.config), overrides=overrides)


def _row_result(row: specs.Row, setting: Setting, profile, seeds: list[int], by_id: dict[str, RunResult],
                released: RunResult | None) -> RowResult:
    configs = [run_config(row, profile, seed, setting.protocol, setting.precision, dict(setting.overrides))
               for seed in seeds]
    found = tuple(by_id[c.run_id] for c in configs if c.run_id in by_id)
    config = configs[0]
    counts = lookup(config.model)
    data = "synthetic" if config.synthetic else config.data
    return RowResult(row, setting, data, config.model, counts.params, counts.macs, found, released)


def run_folders_of(table: specs.TableSpec, results: Path, result: RowResult) -> list[tuple[RunFolder, RunResult]]:
    """Each finished run of a row with its folder: what reads a run's logs needs both."""
    return [(RunFolder(Path(results) / table.name / run.run_id), run) for run in result.runs]


# -- a row against its published error ------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishedVerdict:
    status: str  # within tolerance | better | worse | inconclusive (n=1) | inconclusive | not run | not comparable
    difference: float | None  # our mean − published (points)


def verdict(result: RowResult, verdicts: Verdicts) -> PublishedVerdict:
    """Our interval against the published error: within tolerance when the whole interval lies within
    ``tolerance`` points of it, better/worse when it lies wholly below/above it, inconclusive otherwise."""
    if result.n == 0:
        return PublishedVerdict("not run", None)
    entry = result.row.published
    if not result.comparable or entry.top1_err is None:
        return PublishedVerdict("not comparable", None)
    check = stats.against_published(result.values(), entry.top1_err, verdicts.confidence)
    tolerance = verdicts.tolerance
    if check.low is None:
        status = f"inconclusive (n={check.n})"
    elif entry.top1_err - tolerance <= check.low and check.high <= entry.top1_err + tolerance:
        status = "within tolerance"
    elif check.position in ("above", "below"):
        status = "better" if check.position == "above" else "worse"
    else:
        status = "inconclusive"
    if entry.flag:
        status = f"flagged ({status})"
    return PublishedVerdict(status, check.difference)


# -- gradient flow --------------------------------------------------------------------------------------------
def gradient_drift(folder: RunFolder) -> float | None:
    """How far shared-basis gradients wander: the mean over bases of log10(max / min) of mean |g|.

    A stable gradient flow keeps this small; vanishing or exploding gradients make it large.
    """
    spans: dict[str, list[float]] = {}
    for record in folder.records("gradstats"):
        spans.setdefault(record["basis"], []).append(record["mean_abs"])
    if not spans:
        return None
    return float(np.mean([np.log10(max(v) / max(min(v), 1e-30)) for v in spans.values()]))


# -- claims ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimResult:
    text: str
    status: str  # the decision: holds | does not hold | inconclusive | not evaluated (synthetic) | not run
    detail: str
    suggestion: str = ""  # for an inconclusive claim: seeds per row that would resolve it, and the command
    family: str = ""  # primary | secondary | "" (no claim marked primary: the table's claims are one family)
    family_size: int = 0  # claims of the family that were tested (Holm's m)
    raw_status: str = ""  # the verdict of this claim alone, before the family adjustment
    p: float | None = None  # two-sided p-value of this claim alone
    p_adjusted: float | None = None  # Holm over the family
    fragile: str = ""  # a decided verdict that changes under another reasonable analysis: which, and to what

    @property
    def decided(self) -> bool:
        return self.status in ("holds", "does not hold")


# The analyses a decided claim is re-run under: the main one first. A verdict that changes is fragile.
VARIANTS = (("selected", True), ("final", True), ("selected", False))
VARIANT_NAMES = {("final", True): "the final epoch instead of the selected one",
                 ("selected", False): "unpaired (Welch)"}


def default_claims(table: specs.TableSpec) -> list[specs.Claim]:
    """Each shared row against the original network of the same family in the table."""
    originals = {r.model.name: r for r in table.rows if r.model.config.variant == "original"}
    claims = []
    for row in table.rows:
        base = row.model.config.base_name
        if row.model.config.variant != "original" and base in originals:
            claims.append(specs.Claim(row.id, originals[base].id, "lower", fewer_params=True))
    return claims


@dataclass(frozen=True)
class _Test:
    """One claim's comparison under one analysis variant, ready to be adjusted with its family."""

    difference: stats.Difference
    relation: str  # lower | not_worse (stats' vocabulary)
    margin: float | None
    unit: str
    name: str

    @property
    def p(self) -> float | None:
        return stats.p_value(self.difference, self.margin if self.relation == "not_worse" else 0.0)


def decide_claims(table: specs.TableSpec, rows: list[RowResult], results: Path) -> list[ClaimResult]:
    """Every claim of the table whose rows are in ``rows``, decided with Holm over its family.

    The family: the claims marked ``primary`` (pre-registered) form one, the others a second, secondary one;
    with none marked, every claim is in one family. Each decided claim is re-decided under ``VARIANTS``.
    """
    by_id = {r.row.id: r for r in rows}
    claims = [c for c in (table.claims or tuple(default_claims(table))) if c.row in by_id and c.than in by_id]
    any_primary = any(c.primary for c in claims)
    families = ["primary" if c.primary else "secondary" if any_primary else "" for c in claims]
    grad_values = {}
    tests = {v: [_test(c, by_id[c.row], by_id[c.than], table, results, v, grad_values) for c in claims]
             for v in VARIANTS}
    decided = {v: _decide_families(claims, families, tests[v], by_id) for v in VARIANTS}
    out = []
    for i, claim in enumerate(claims):
        a, b = by_id[claim.row], by_id[claim.than]
        text = claim.text or _claim_text(claim, a, b)
        scope = claim_scope(a)
        text = f"{scope}: {text}" if scope else text
        test = tests[VARIANTS[0]][i]
        if isinstance(test, tuple):  # not testable: (status, detail)
            out.append(ClaimResult(text, test[0], test[1], family=families[i]))
            continue
        status, raw, p, adjusted, m = decided[VARIANTS[0]][i]
        fragile = _fragility(status, [(v, decided[v][i][0]) for v in VARIANTS[1:]
                                      if not isinstance(tests[v][i], tuple)])
        detail = _detail(test, raw, p, adjusted, status, families[i], m, a, b)
        suggestion = _suggestion(test, status, m, a, b, table) if status == "inconclusive" else ""
        out.append(ClaimResult(text, status, detail, suggestion, families[i], m, raw, p, adjusted, fragile))
    return out


def claim_scope(result: RowResult) -> str:
    """Where a claim's verdict applies: the row's dataset at the paper's scale, "on this proxy", or the dataset
    "in this setting" (a custom recipe, bf16: the caption says which); synthetic data decides nothing."""
    profile = PROFILES.get(result.setting.profile)
    if result.synthetic:
        return ""
    if (profile is not None and profile.is_proxy) or result.data != result.row.dataset:
        return "on this proxy"
    if not result.at_paper_scale:  # the paper's data, but another recipe or precision (the caption says which)
        return f"{display_name(result.row.dataset)}, in this setting"
    return display_name(result.row.dataset)


def _test(claim: specs.Claim, a: RowResult, b: RowResult, table: specs.TableSpec, results: Path,
          variant: tuple[str, bool], grad_values: dict) -> _Test | tuple[str, str]:
    stage, pair = variant
    if a.n == 0 or b.n == 0:
        return "not run", f"runs: {a.row.id} n={a.n}, {b.row.id} n={b.n}"
    if a.synthetic or b.synthetic:
        return "not evaluated (synthetic)", "synthetic data: the numbers say nothing about the paper's claims"
    if claim.relation == "steadier_gradients":
        key = (claim.row, claim.than)
        if key not in grad_values:
            grad_values[key] = _gradient_values(a, b, table, results)
        values, unit, name = grad_values[key]
    else:
        values, unit, name = (a.values(stage=stage), b.values(stage=stage)), "points", f"top-1 error % ({stage} epoch)"
    if values is None:
        return "not run", "no gradient statistics were logged"
    if not values[0] or not values[1]:
        return "not run", f"no finite result: {a.row.id} diverged {a.diverged()}, {b.row.id} {b.diverged()}"
    relation = specs.RELATIONS[claim.relation].test
    margin = (claim.margin or table.verdicts.margin) if relation == "not_worse" else None
    difference = stats.compare(*values, table.verdicts.confidence, pair=pair)
    return _Test(difference, relation, margin, unit, name)


def _decide_families(claims: list[specs.Claim], families: list[str], tests: list,
                     by_id: dict[str, RowResult]) -> list[tuple | None]:
    """Per claim (status, raw status, p, Holm-adjusted p, family size); None for claims without a test."""
    decided: list[tuple | None] = [None] * len(claims)
    for family in dict.fromkeys(families):
        members = [i for i, f in enumerate(families) if f == family and not isinstance(tests[i], tuple)]
        adjusted = stats.holm([tests[i].p for i in members])
        for i, p_adjusted in zip(members, adjusted):
            test, claim = tests[i], claims[i]
            raw = stats.decide(test.difference, test.relation, test.margin).status
            status = stats.decide(test.difference, test.relation, test.margin,
                                  p=p_adjusted if p_adjusted is not None else 1.0).status
            if test.difference.zero_spread or not test.difference.has_interval:
                status = "inconclusive"
            a, b = by_id[claim.row], by_id[claim.than]
            if claim.fewer_params and a.params >= b.params:  # "with fewer parameters" is part of the claim
                raw = "does not hold" if raw == "holds" else raw
                status = "does not hold" if status == "holds" else status
            decided[i] = (status, raw, test.p, p_adjusted, len(members))
    return decided


def _fragility(status: str, others: list[tuple[tuple[str, bool], str]]) -> str:
    """"" when every other analysis reaches the same decision; else which ones change it, and to what."""
    if status not in ("holds", "does not hold"):
        return ""
    changed = [f"{VARIANT_NAMES[v]}: {other}" for v, other in others if other != status]
    return "; ".join(changed)


def _detail(test: _Test, raw: str, p: float | None, adjusted: float | None, status: str, family: str, m: int,
            a: RowResult, b: RowResult) -> str:
    d = test.difference
    verdict = stats.decide(d, test.relation, test.margin)
    alone = f"alone: {raw} ({verdict.reason}" + (f"; p = {stats.format_p(p)})" if p is not None else ")")
    family_words = f"{family} family" if family else "family"
    holm = (f"Holm over the {family_words} of {m}: adjusted p = {stats.format_p(adjusted)}, {status}"
            if adjusted is not None else f"Holm over the {family_words} of {m}: {status}")
    return (f"{test.name}: {_who(a)} {d.mean_a:.2f} vs {_who(b)} {d.mean_b:.2f}; "
            f"{stats.describe(d, test.unit)}; {alone}; {holm}")


def _suggestion(test: _Test, status: str, m: int, a: RowResult, b: RowResult, table: specs.TableSpec) -> str:
    """Seeds per row for 80 % power at the family's Bonferroni level (the level Holm's first step uses)."""
    d, relation, margin = test.difference, test.relation, test.margin
    target = _paper_effect(a, b) if test.unit == "points" else None
    seeds = stats.seeds_needed(d, relation, margin, family=max(m, 1))
    line = stats.suggestion(d, relation, margin, target=target, unit=test.unit, needed=seeds, family=max(m, 1))
    if seeds:
        setting = a.setting.options
        setting += "".join(f" --set {key}={value:g}" for key, value in a.setting.overrides)  # the same custom recipe
        line += (f": python -m replicate.run {table.argument} --rows {a.row.id},{b.row.id} {setting} "
                 f"--seeds {seeds}")
    return line


def _gradient_values(a: RowResult, b: RowResult, table: specs.TableSpec,
                     results: Path) -> tuple[tuple[dict, dict] | None, str, str]:
    drifts = []
    for row in (a, b):
        drift = {run.seed: gradient_drift(folder) for folder, run in run_folders_of(table, results, row)}
        drifts.append({seed: d for seed, d in drift.items() if d is not None and math.isfinite(d)})
    if not all(drifts):
        return None, "", ""
    return (drifts[0], drifts[1]), "", "gradient drift log10(max/min mean|g|)"


def _paper_effect(a: RowResult, b: RowResult) -> float | None:
    """The published a − b, when the paper printed both errors and the runs are in the paper's setting: the
    paper's effect is no target for a proxy (another dataset, network or scale)."""
    if not (a.at_paper_scale and b.at_paper_scale):
        return None
    pa, pb = a.row.published, b.row.published
    if pa is None or pb is None or pa.top1_err is None or pb.top1_err is None:
        return None
    return pa.top1_err - pb.top1_err


def _who(result: RowResult) -> str:
    """Row id and the network actually trained (another profile may train a shallower one)."""
    return f"{result.row.id} ({result.model.label})"


def _claim_text(claim: specs.Claim, a: RowResult, b: RowResult) -> str:
    saving = ""
    if claim.fewer_params:
        saving = f"saves {100 * (1 - a.params / b.params):.1f}% of {b.row.label}'s parameters and "
    relation = specs.RELATIONS[claim.relation].words
    if saving and claim.relation == "lower":
        return f"{a.row.label} {saving}its error is lower"
    return f"{a.row.label} {saving}{relation} {b.row.label}"
