"""From stored results back to the rows of a table: per-row aggregates over seeds, and the paper's claims.

A result belongs to a row when the row, resolved with the result's own profile, protocol and seed, gives the
result's run id: so a result of another dataset, profile or configuration can never land in a paper row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import spec as specs
from .complexity import lookup
from .config import PROFILES, RunConfig
from .plan import profile_applies, run_config
from .store import read_jsonl


@dataclass(frozen=True)
class RowResult:
    """All finished runs of one row under one (profile, protocol), aggregated over seeds."""

    row: specs.Row
    profile: str
    protocol: str
    data: str
    model: str  # the model actually trained (the mini profile trains a shallower ResNet)
    params: int
    macs: int
    runs: tuple[dict, ...] = field(default_factory=tuple)  # result.json contents

    @property
    def n(self) -> int:
        return len(self.runs)

    def errors(self, metric: str = "top1_err", stage: str = "selected") -> np.ndarray:
        return np.array([r[stage][metric] for r in self.runs if r[stage].get(metric) is not None], float)

    def mean(self, metric: str = "top1_err", stage: str = "selected") -> float:
        values = self.errors(metric, stage)
        return float(values.mean()) if len(values) else float("nan")

    def std(self, metric: str = "top1_err", stage: str = "selected") -> float:
        values = self.errors(metric, stage)
        return float(values.std(ddof=1)) if len(values) > 1 else 0.0

    @property
    def comparable(self) -> bool:
        """Only full-profile runs on the paper's own dataset may be compared with a published number."""
        return self.profile == "full" and self.data == self.row.dataset and self.row.published is not None


def read_results(results: Path, table: str) -> list[tuple[Path, dict]]:
    """Every finished run folder of a table with its ``result.json``."""
    found = []
    for path in sorted((Path(results) / table).glob("*/result.json")):
        found.append((path.parent, json.loads(path.read_text())))
    return found


def _settings(results: list[tuple[Path, dict]]) -> list[tuple[str, str]]:
    """The (profile, protocol) pairs present in the results, full first."""
    pairs = {(r["config"]["profile"], r["config"]["protocol"]) for _, r in results}
    order = list(PROFILES)
    return sorted(pairs, key=lambda p: (order.index(p[0]) if p[0] in order else 99, p[1]))


def collect(table: specs.TableSpec, results: Path) -> dict[tuple[str, str], list[RowResult]]:
    """Row aggregates for each (profile, protocol) that has results; ``{("full", "paper"): []}`` if none."""
    stored = read_results(results, table.name)
    by_id = {r["run_id"]: (d, r) for d, r in stored}
    default = ("full", table.rows[0].protocol if table.rows else "paper")  # the paper's setting, always shown
    settings = [default] + [s for s in _settings(stored) if s != default]
    seeds = sorted({r["config"]["seed"] for _, r in stored}) or [0]
    collected = {}
    for profile_name, protocol in settings:
        profile = PROFILES.get(profile_name)
        if profile is None:
            continue
        rows = []
        for row in table.rows:
            if not profile_applies(row, profile):
                continue
            configs = [run_config(row, profile, seed, protocol) for seed in seeds]
            runs = tuple(by_id[c.run_id][1] for c in configs if c.run_id in by_id)
            rows.append(_row_result(row, configs[0], runs))
        collected[(profile_name, protocol)] = rows
    return collected


def _row_result(row: specs.Row, config: RunConfig, runs: tuple[dict, ...]) -> RowResult:
    if runs and runs[0].get("params"):
        params, macs = runs[0]["params"], runs[0]["macs"]
    else:
        counts = lookup(config.model, config.dataset)
        params, macs = counts.params, counts.macs
    data = "synthetic" if config.synthetic else config.data
    return RowResult(row, config.profile, config.protocol, data, config.model, params, macs, runs)


def run_dirs(table: specs.TableSpec, results: Path, row_result: RowResult) -> list[Path]:
    ids = {r["run_id"] for r in row_result.runs}
    return [Path(results) / table.name / run_id for run_id in sorted(ids)]


def verdict(result: RowResult, tolerance: dict) -> tuple[str, float | None]:
    """within tolerance / better / worse / not run / not comparable / flagged, and the difference."""
    if result.n == 0:
        return "not run", None
    entry = result.row.published
    if not result.comparable or entry.top1_err is None:
        return "not comparable", None
    difference = result.mean() - entry.top1_err
    allowed = max(tolerance.get("sigmas", 2.0) * result.std(), tolerance.get("points", 0.5))
    outcome = "within tolerance" if abs(difference) <= allowed else "better" if difference < 0 else "worse"
    if entry.flag:
        return f"flagged ({outcome})", difference
    return outcome, difference


def gradient_drift(run_dir: Path) -> float | None:
    """How far shared-basis gradients wander: the mean over bases of log10(max / min) of mean |g|.

    A stable gradient flow keeps this small; vanishing or exploding gradients make it large.
    """
    stats = pd.DataFrame(read_jsonl(Path(run_dir) / "gradstats.jsonl"))
    if stats.empty:
        return None
    spans = stats.groupby("basis")["mean_abs"].agg(lambda g: np.log10(g.max() / max(g.min(), 1e-30)))
    return float(spans.mean())


# -- claims ---------------------------------------------------------------------------------------------------
RELATIONS = {
    "lower": "has a lower error than",
    "not_worse": "matches or beats",
    "steadier_gradients": "keeps its shared-basis gradients steadier than",
}


@dataclass(frozen=True)
class Claim:
    row: str
    than: str
    relation: str = "lower"
    fewer_params: bool = False
    text: str = ""


@dataclass(frozen=True)
class ClaimResult:
    text: str
    status: str  # holds | does not hold | inconclusive | not run
    detail: str


def default_claims(table: specs.TableSpec) -> list[Claim]:
    """Each shared row against the original network of the same family in the table."""
    originals = {r.model: r for r in table.rows if "-" not in r.model}
    return [Claim(r.id, originals[r.model.split("-")[0]].id, "lower", fewer_params=True)
            for r in table.rows if "-" in r.model and r.model.split("-")[0] in originals]


def evaluate_claims(table: specs.TableSpec, rows: list[RowResult], results: Path) -> list[ClaimResult]:
    by_id = {r.row.id: r for r in rows}
    claims = [Claim(**c) for c in table.claims] if table.claims else default_claims(table)
    return [_evaluate(claim, by_id, table, results) for claim in claims if claim.row in by_id
            and claim.than in by_id]


def _evaluate(claim: Claim, by_id: dict[str, RowResult], table, results: Path) -> ClaimResult:
    a, b = by_id[claim.row], by_id[claim.than]
    text = claim.text or _claim_text(claim, a, b)
    if a.n == 0 or b.n == 0:
        return ClaimResult(text, "not run", f"runs: {a.row.id} n={a.n}, {b.row.id} n={b.n}")
    if claim.relation == "steadier_gradients":
        values = [np.array([d for d in (gradient_drift(p) for p in run_dirs(table, results, r)) if d is not None])
                  for r in (a, b)]
        if not all(len(v) for v in values):
            return ClaimResult(text, "not run", "no gradient statistics were logged")
        name = "gradient drift log10(max/min mean|g|)"
    else:
        values = [a.errors(), b.errors()]
        name = "top-1 error %"
    (ma, sa, na), (mb, sb, nb) = (_summary(v) for v in values)
    difference = ma - mb
    margin = 2 * np.sqrt(sa ** 2 / na + sb ** 2 / nb)
    if claim.relation == "not_worse":
        status = "holds" if difference <= margin else "does not hold"
    elif difference < -margin:
        status = "holds"
    elif difference > margin:
        status = "does not hold"
    else:
        status = "inconclusive"
    if claim.fewer_params and a.params >= b.params and status == "holds":
        status = "does not hold"
    detail = (f"{name}: {_who(a)} {ma:.2f} ± {sa:.2f} (n={na}) vs {_who(b)} {mb:.2f} ± {sb:.2f} "
              f"(n={nb}); difference {difference:+.2f}, margin 2·SE = {margin:.2f}")
    return ClaimResult(text, status, detail)


def _who(result: RowResult) -> str:
    """Row id and the network actually trained (another profile may train a shallower one)."""
    return f"{result.row.id} ({result.model})"


def _summary(values: np.ndarray) -> tuple[float, float, int]:
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def _claim_text(claim: Claim, a: RowResult, b: RowResult) -> str:
    saving = ""
    if claim.fewer_params:
        saving = f"saves {100 * (1 - a.params / b.params):.1f}% of {b.row.label}'s parameters and "
    relation = RELATIONS[claim.relation]
    if saving and claim.relation == "lower":
        return f"{a.row.label} {saving}its error is lower"
    return f"{a.row.label} {saving}{relation} {b.row.label}"
