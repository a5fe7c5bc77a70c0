"""Comparisons of two table rows over seeds, and the verdicts on the paper's claims built on them.

Why not "difference beyond 2·SE": with 2 or 3 seeds the standard error is itself a rough guess and the
normal quantile 2 is far too small (Student's t with 1 df needs 12.7 for 95 %); and runs with the same seed
share data order and augmentation across rows, so per-seed differences are much less noisy than either row.

* ``compare`` gives the difference a − b with a Student-t interval: paired by seed when both rows hold the
  same seeds (n − 1 df, as ``scipy.stats.ttest_rel``), otherwise Welch (Welch–Satterthwaite df, as
  ``ttest_ind(equal_var=False)``). With fewer than 2 values on a side there is no interval (low = high = None),
  never a zero-width one.
* ``decide`` turns the interval into holds / does not hold / inconclusive.
* ``seeds_needed`` / ``suggestion``: how many seeds per row would resolve an inconclusive claim.
* ``interval``: the t interval around the mean of one row.
* ``against_published``: that interval against a published number.

Values are metrics where lower is better (top-1 error %), keyed by seed: ``{0: 7.2, 1: 7.5}``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

RELATIONS = ("lower", "higher", "not_worse")
MAX_SEEDS = 1000


@dataclass(frozen=True)
class Difference:
    """a − b of two rows' means and its t interval; low/high/sd/se/df are None when a row has < 2 values."""

    estimate: float  # mean(a) − mean(b); when paired, the mean of the per-seed differences (the same number)
    low: float | None
    high: float | None
    confidence: float
    paired: bool  # True: per-seed differences, n − 1 df; False: Welch
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float | None  # sample sd (ddof=1) of each row
    sd_b: float | None
    sd: float | None  # the spread behind se: sd of per-seed differences (paired), sqrt(sd_a² + sd_b²) (Welch)
    se: float | None
    df: float | None

    @property
    def has_interval(self) -> bool:
        return self.low is not None


@dataclass(frozen=True)
class Verdict:
    status: str  # holds | does not hold | inconclusive
    reason: str


@dataclass(frozen=True)
class PublishedCheck:
    """Our mean of one row with its t interval, and where the published value lies relative to it."""

    mean: float
    low: float | None
    high: float | None
    n: int
    confidence: float
    published: float
    position: str  # inside | below | above (the published value against our interval) | no interval (n < 2)

    @property
    def difference(self) -> float:
        return self.mean - self.published


# -- the interval ---------------------------------------------------------------------------------------------
def compare(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95, *,
            pair: bool = True) -> Difference:
    """The difference a − b, paired by seed when both rows hold the same seeds (≥ 2), else Welch.

    ``pair=False`` forces Welch even for equal seed sets (rows whose seeds do not share data order).
    With zero spread the interval is the point itself, as scipy gives it.
    """
    _check_confidence(confidence)
    xa, xb = _values(a), _values(b)
    n_a, n_b = len(xa), len(xb)
    sd_a, sd_b = _sd(xa), _sd(xb)
    common = dict(confidence=confidence, n_a=n_a, n_b=n_b, mean_a=float(xa.mean()), mean_b=float(xb.mean()),
                  sd_a=sd_a, sd_b=sd_b)
    if n_a < 2 or n_b < 2:
        return Difference(estimate=float(xa.mean() - xb.mean()), low=None, high=None, paired=False, sd=None,
                          se=None, df=None, **common)
    paired = pair and set(a) == set(b)
    if paired:
        per_seed = np.array([a[s] - b[s] for s in sorted(a)], float)
        estimate, sd, df = float(per_seed.mean()), _sd(per_seed), float(n_a - 1)
        se = sd / math.sqrt(n_a)
    else:
        va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
        estimate, sd, se = float(xa.mean() - xb.mean()), math.hypot(sd_a, sd_b), math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)) if se > 0 else float(n_a + n_b - 2)
    half = float(_quantile(confidence, df)) * se
    return Difference(estimate=estimate, low=estimate - half, high=estimate + half, paired=paired, sd=sd,
                      se=se, df=df, **common)


# -- the verdict ----------------------------------------------------------------------------------------------
def decide(difference: Difference, relation: str = "lower", margin: float | None = None) -> Verdict:
    """holds / does not hold / inconclusive for the claim "a <relation> b".

    lower:  holds when the interval lies below 0, does not hold when it lies above 0.
    higher: the mirror image (holds when the interval lies above 0).
    not_worse: non-inferiority against ``margin`` δ > 0 (same units, lower is better): holds when the upper end
    is below δ, does not hold when the lower end is above δ; a two-sided 95 % interval is a one-sided 2.5 % test.
    Fewer than 2 seeds on a side: inconclusive, never a verdict.
    """
    _check_relation(relation, margin)
    d = difference
    if not d.has_interval:
        return Verdict("inconclusive", f"inconclusive (n={min(d.n_a, d.n_b)}): no interval with fewer than "
                                       f"2 seeds per row (n={d.n_a} vs {d.n_b})")
    stated = f"the {_percent(d.confidence)} CI {_interval(d.low, d.high)}"
    if relation == "not_worse":
        if d.high < margin:
            return Verdict("holds", f"{stated} lies below the margin {_signed(margin)}")
        if d.low > margin:
            return Verdict("does not hold", f"{stated} lies above the margin {_signed(margin)}: "
                                            f"worse by more than the margin")
        return Verdict("inconclusive", f"{stated} straddles the margin {_signed(margin)}")
    if d.low <= 0 <= d.high:
        return Verdict("inconclusive", f"{stated} contains 0")
    below = d.high < 0
    claimed = below if relation == "lower" else not below
    return Verdict("holds" if claimed else "does not hold", f"{stated} lies {'below' if below else 'above'} 0")


# -- seeds needed ---------------------------------------------------------------------------------------------
def seeds_needed(difference: Difference, relation: str = "lower", margin: float | None = None,
                 effect: float | None = None, cap: int = MAX_SEEDS) -> int | None:
    """Smallest n per row (2..cap) whose t interval would resolve the claim; None when unreachable or unknown.

    A planning rule of thumb, not a power calculation: it assumes the spread stays as observed and the
    difference is ``effect`` (default: the observed estimate), i.e. that new seeds repeat what was seen.
    Directional: half-width t(df(n))·sd/√n < |effect|, resolving either way. not_worse: half-width
    < |margin − effect|: below the margin more seeds would show it holds, above it that it does not.
    Paired: sd of per-seed differences, df n − 1. Welch: approximated with equal n per row,
    se = sqrt(sd_a² + sd_b²)/√n and the Welch–Satterthwaite df at that n. None without a spread (n < 2).
    """
    _check_relation(relation, margin)
    if difference.sd is None:
        return None
    effect = difference.estimate if effect is None else effect
    distance = abs(margin - effect) if relation == "not_worse" else abs(effect)
    n = np.arange(2, max(cap, 2) + 1)
    half = _quantile(difference.confidence, _df_at(difference, n)) * difference.sd / np.sqrt(n)
    enough = np.flatnonzero(half < distance)
    return int(n[enough[0]]) if len(enough) else None


def _df_at(d: Difference, n: np.ndarray) -> np.ndarray:
    """Degrees of freedom at n seeds per row: n − 1 paired; Welch–Satterthwaite at equal n unpaired."""
    if d.paired:
        return n - 1.0
    va, vb = d.sd_a ** 2, d.sd_b ** 2
    if va + vb == 0:
        return 2.0 * n - 2
    return (va + vb) ** 2 * (n - 1.0) / (va ** 2 + vb ** 2)


def suggestion(difference: Difference, relation: str = "lower", margin: float | None = None,
               target: float | None = None, unit: str = "points", cap: int = MAX_SEEDS,
               needed: int | None = None) -> str:
    """One line: seeds per row that would resolve the claim at the observed spread (and at a target effect).

    ``target`` is an assumed difference a − b (e.g. the paper's), reported as a second number. ``needed``:
    ``seeds_needed`` at the observed effect when the caller already has it (None: computed here).
    """
    _check_relation(relation, margin)
    if difference.sd is None:
        return "at least 2 seeds per row are needed before any interval exists"
    against = f" against the margin of {margin:.2f} {unit}".rstrip() if relation == "not_worse" else ""
    if needed is None:
        needed = seeds_needed(difference, relation, margin, None, cap)
    line = _needed_text(needed, difference.estimate, unit, cap)
    line = f"{line}{against} at this spread"
    if target is not None:
        n = seeds_needed(difference, relation, margin, target, cap)
        line += f"; {'≈ ' + str(n) if n else f'more than {cap}'} at a target {_amount(target, unit)}"
    return line


def _needed_text(n: int | None, effect: float, unit: str, cap: int) -> str:
    if n is None:
        return f"even {cap} seeds per row would not resolve a {_amount(effect, unit)}"
    return f"≈ {n} seeds per row would resolve a {_amount(effect, unit)}"


# -- ours against the published number ------------------------------------------------------------------------
def interval(values: Mapping[int, float] | Sequence[float],
             confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the t interval (n − 1 df) around the mean; no bounds with fewer than 2 values."""
    _check_confidence(confidence)
    x = _values(values)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, None, None
    half = float(_quantile(confidence, len(x) - 1.0)) * _sd(x) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def against_published(ours: Mapping[int, float] | Sequence[float], published: float,
                      confidence: float = 0.95) -> PublishedCheck:
    """The t interval (n − 1 df) around our mean and whether the published value lies inside, below or above.

    With one seed there is no interval (position "no interval"), whatever the distance.
    """
    mean, low, high = interval(ours, confidence)
    n = len(ours)
    if low is None:
        return PublishedCheck(mean, None, None, n, confidence, published, "no interval")
    position = "below" if published < low else "above" if published > high else "inside"
    return PublishedCheck(mean, low, high, n, confidence, published, position)


# -- formatting -----------------------------------------------------------------------------------------------
def describe(difference: Difference, unit: str = "points") -> str:
    """The detail line: "difference −0.42 points [−0.91, +0.07] (95 % CI, paired by seed, n=3)"."""
    d = difference
    head = f"difference {_signed(d.estimate)} {unit}".rstrip()
    if not d.has_interval:
        return f"{head} (no interval: n={d.n_a} vs {d.n_b})"
    how = f"paired by seed, n={d.n_a}" if d.paired else f"Welch, n={d.n_a} vs {d.n_b}"
    return f"{head} {_interval(d.low, d.high)} ({_percent(d.confidence)} CI, {how})"


def describe_published(check: PublishedCheck) -> str:
    """"ours 7.42 [7.10, 7.74] (95 % CI, n=3); published 7.30 lies inside"."""
    c = check
    if c.low is None:
        return f"ours {c.mean:.2f} (n={c.n}, no interval); published {c.published:.2f}"
    where = "lies inside" if c.position == "inside" else f"lies {c.position} our interval"
    return (f"ours {c.mean:.2f} [{c.low:.2f}, {c.high:.2f}] ({_percent(c.confidence)} CI, n={c.n}); "
            f"published {c.published:.2f} {where}")


# -- helpers --------------------------------------------------------------------------------------------------
def _values(values: Mapping[int, float] | Sequence[float]) -> np.ndarray:
    """Values in seed order; at least one, all finite (a missing metric is a missing seed, not a value)."""
    x = np.array([values[s] for s in sorted(values)] if isinstance(values, Mapping) else list(values), float)
    if len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"need at least one finite value per row, got {values!r}")
    return x


def _sd(x: np.ndarray) -> float | None:
    return float(x.std(ddof=1)) if len(x) > 1 else None


def _quantile(confidence: float, df: float | np.ndarray) -> float | np.ndarray:
    """Two-sided Student-t quantile t_{1 − α/2, df}."""
    return stats.t.ppf(0.5 + confidence / 2, df)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _check_relation(relation: str, margin: float | None) -> None:
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")
    if relation == "not_worse" and not (margin is not None and margin > 0):
        raise ValueError(f"not_worse needs a margin δ > 0, got {margin!r}")


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _interval(low: float, high: float) -> str:
    return f"[{_signed(low)}, {_signed(high)}]"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g} %"


def _amount(x: float, unit: str) -> str:
    return f"difference of {_signed(x)} {unit}".rstrip()
