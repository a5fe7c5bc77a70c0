"""Comparisons of two table rows over seeds, and the verdicts on the paper's claims built on them.

Why not "difference beyond 2·SE": with 2 or 3 seeds the standard error is itself a rough guess and the
normal quantile 2 is far too small (Student's t with 1 df needs 12.7 for 95 %); and runs with the same seed
share data order and augmentation across rows, so per-seed differences are much less noisy than either row.

* ``compare`` gives the difference a − b with a Student-t interval: paired on the seeds both rows share when
  there are at least 2 (n − 1 df, as ``scipy.stats.ttest_rel``; the other seeds are named as left out),
  otherwise Welch (Welch–Satterthwaite df, as ``ttest_ind(equal_var=False)``). With fewer than 2 values on a
  side there is no interval (low = high = None).
* ``decide`` turns the interval (or a family-adjusted p-value) into holds / does not hold / inconclusive; a
  zero-spread difference (equal per-seed differences: errors lie on a 0.01 grid) never decides.
* ``p_value`` / ``holm``: the two-sided p-value of a difference and Holm's step-down adjustment over a family.
* ``seeds_needed`` / ``seeds_range`` / ``suggestion``: seeds per row for 80 % power (noncentral t) at the
  observed spread, and how far that number moves over the spread's own 95 % interval.
* ``interval``: the t interval around the mean of one row.
* ``against_published``: that interval against a published number.

Values are metrics where lower is better (top-1 error %), keyed by seed: ``{0: 7.2, 1: 7.5}``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

RELATIONS = ("lower", "higher", "not_worse")
MAX_SEEDS = 1000
POWER = 0.8  # of the seed counts suggested: the usual planning target (0.5 would be a coin flip)
ZERO_SPREAD = 1e-9  # points: a spread below this is floating-point noise on equal per-seed differences


@dataclass(frozen=True)
class Difference:
    """a − b of two rows' means and its t interval; low/high/sd/se/df are None when a row has < 2 values."""

    estimate: float  # mean(a) − mean(b); when paired, the mean of the per-seed differences (the same number)
    low: float | None
    high: float | None
    confidence: float
    paired: bool  # True: per-seed differences on the seeds both rows share, n − 1 df; False: Welch
    n_a: int  # values used on each side (paired: the shared seeds)
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float | None  # sample sd (ddof=1) of each row
    sd_b: float | None
    sd: float | None  # the spread behind se: sd of per-seed differences (paired), sqrt(sd_a² + sd_b²) (Welch)
    se: float | None
    df: float | None
    left_out: tuple[int, ...] = ()  # paired: seeds only one of the rows has

    @property
    def has_interval(self) -> bool:
        return self.low is not None

    @property
    def zero_spread(self) -> bool:
        """Every per-seed difference equal (or every value equal): a zero-width interval that proves nothing."""
        return self.sd is not None and self.sd < ZERO_SPREAD


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
    """The difference a − b, paired on the seeds both rows share (at least 2), else Welch.

    Runs with the same seed share data order and augmentation, so pairing removes the seed effect; a seed only
    one row has is left out of the pairing (and named) rather than throwing the pairing away.
    ``pair=False`` forces Welch on every value (rows whose seeds do not share data order).
    """
    _check_confidence(confidence)
    xa, xb = _values(a), _values(b)  # both rows valid before anything is chosen
    common = sorted(set(a) & set(b))
    if pair and len(common) >= 2 and len(a) >= 2 and len(b) >= 2:
        return _paired(a, b, common, confidence)
    n_a, n_b = len(xa), len(xb)
    sd_a, sd_b = _sd(xa), _sd(xb)
    common = dict(confidence=confidence, n_a=n_a, n_b=n_b, mean_a=float(xa.mean()), mean_b=float(xb.mean()),
                  sd_a=sd_a, sd_b=sd_b)
    if n_a < 2 or n_b < 2:
        return Difference(estimate=float(xa.mean() - xb.mean()), low=None, high=None, paired=False, sd=None,
                          se=None, df=None, **common)
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    estimate, sd, se = float(xa.mean() - xb.mean()), math.hypot(sd_a, sd_b), math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)) if se > 0 else float(n_a + n_b - 2)
    half = float(_quantile(confidence, df)) * se
    return Difference(estimate=estimate, low=estimate - half, high=estimate + half, paired=False, sd=sd,
                      se=se, df=df, **common)


def _paired(a: Mapping[int, float], b: Mapping[int, float], seeds: list[int], confidence: float) -> Difference:
    xa, xb = np.array([a[s] for s in seeds], float), np.array([b[s] for s in seeds], float)
    per_seed = xa - xb
    n = len(seeds)
    estimate, sd = float(per_seed.mean()), _sd(per_seed)
    se, df = sd / math.sqrt(n), float(n - 1)
    half = float(_quantile(confidence, df)) * se
    return Difference(estimate=estimate, low=estimate - half, high=estimate + half, confidence=confidence,
                      paired=True, n_a=n, n_b=n, mean_a=float(xa.mean()), mean_b=float(xb.mean()),
                      sd_a=_sd(xa), sd_b=_sd(xb), sd=sd, se=se, df=df,
                      left_out=tuple(sorted(set(a) ^ set(b))))


def p_value(difference: Difference, null: float = 0.0) -> float | None:
    """Two-sided p-value of "a − b = null" (non-inferiority: null = the margin); None without a spread."""
    d = difference
    if not d.has_interval or d.zero_spread:
        return None
    return float(2 * stats.t.sf(abs(d.estimate - null) / d.se, d.df))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times m − k + 1, kept non-decreasing and
    at most 1. A member without a p-value (no interval) stays in the family, counted in m, never rejected."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i] is None, pvalues[i] or 0.0))
    adjusted: list[float | None] = [None] * m
    running = 0.0
    for k, i in enumerate(order):
        if pvalues[i] is not None:
            running = max(running, min(1.0, (m - k) * pvalues[i]))
            adjusted[i] = running
    return adjusted


# -- the verdict ----------------------------------------------------------------------------------------------
def decide(difference: Difference, relation: str = "lower", margin: float | None = None,
           p: float | None = None) -> Verdict:
    """holds / does not hold / inconclusive for the claim "a <relation> b".

    lower:  holds when the interval lies below 0, does not hold when it lies above 0.
    higher: the mirror image (holds when the interval lies above 0).
    not_worse: non-inferiority against ``margin`` δ > 0 (same units, lower is better): holds when the upper end
    is below δ, does not hold when the lower end is above δ. A two-sided interval at 95 % is a one-sided test at
    2.5 % in each direction. ``p``: decide instead by this (family-adjusted) two-sided p-value at the same level.
    Fewer than 2 seeds on a side, or a zero spread: inconclusive, never a verdict.
    """
    _check_relation(relation, margin)
    d = difference
    if not d.has_interval:
        return Verdict("inconclusive", f"inconclusive (n={min(d.n_a, d.n_b)}): no interval with fewer than "
                                       f"2 seeds per row (n={d.n_a} vs {d.n_b})")
    if d.zero_spread:
        return Verdict("inconclusive", "every per-seed difference is the same (zero spread): a zero-width "
                                       "interval decides nothing")
    null = margin if relation == "not_worse" else 0.0
    alpha = 1 - d.confidence
    if p is not None:
        stated = f"adjusted p = {format_p(p)}"
        significant = p < alpha
    else:
        stated = f"the {_percent(d.confidence)} CI {_interval(d.low, d.high)}"
        significant = not d.low <= null <= d.high
    if not significant:
        where = (f"straddles the margin {_signed(margin)}" if relation == "not_worse" else "contains 0") \
            if p is None else f"≥ {alpha:g}"
        return Verdict("inconclusive", f"{stated} {where}")
    below = d.estimate < null
    claimed = below if relation in ("lower", "not_worse") else not below
    if relation == "not_worse":
        side = f"below the margin {_signed(margin)}" if below else f"above the margin {_signed(margin)}: " \
                                                                   f"worse by more than the margin"
    else:
        side = f"{'below' if below else 'above'} 0"
    how = f"lies {side}" if p is None else f"< {alpha:g}: the difference lies {side}"
    return Verdict("holds" if claimed else "does not hold", f"{stated} {how}")


# -- seeds needed ---------------------------------------------------------------------------------------------
def seeds_needed(difference: Difference, relation: str = "lower", margin: float | None = None,
                 effect: float | None = None, cap: int = MAX_SEEDS, family: int = 1) -> int | None:
    """Smallest n per row (2..cap) at which the one-sided t-test has 80 % power; None when unreachable/unknown.

    Power from the noncentral t (``scipy.stats.nct``) at the observed spread, for a true difference ``effect``
    (default: the observed estimate) measured from the null (0, or the margin for not_worse), at the one-sided
    level (1 − confidence)/2, divided by ``family`` (Bonferroni: the level Holm's first step uses). Paired: sd of
    per-seed differences, df n − 1. Welch: equal n per row, se = sqrt(sd_a² + sd_b²)/√n and the
    Welch–Satterthwaite df at that n. None without a spread (n < 2, or zero spread).
    """
    _check_relation(relation, margin)
    if difference.sd is None or difference.zero_spread:
        return None
    effect = difference.estimate if effect is None else effect
    distance = abs(margin - effect) if relation == "not_worse" else abs(effect)
    if distance == 0:
        return None
    n = np.arange(2, max(cap, 2) + 1)
    df = _df_at(difference, n)
    alpha = (1 - difference.confidence) / 2 / family
    noncentrality = distance / (difference.sd / np.sqrt(n))
    enough = np.flatnonzero(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, noncentrality) >= POWER)
    return int(n[enough[0]]) if len(enough) else None


def seeds_range(difference: Difference, relation: str = "lower", margin: float | None = None,
                effect: float | None = None, cap: int = MAX_SEEDS,
                family: int = 1) -> tuple[int | None, int | None]:
    """``seeds_needed`` at the two ends of the spread's own 95 % interval (chi-square, the difference's df):
    with 2 or 3 seeds the observed spread is itself a rough guess, and so is any seed count built on it."""
    d = difference
    if d.sd is None or d.zero_spread:
        return None, None
    ends = []
    for q in (0.975, 0.025):  # small spread first
        k = math.sqrt(d.df / stats.chi2.ppf(q, d.df))
        scaled = replace(d, sd=d.sd * k, sd_a=d.sd_a * k if d.sd_a is not None else None,
                         sd_b=d.sd_b * k if d.sd_b is not None else None)
        ends.append(seeds_needed(scaled, relation, margin, effect, cap, family))
    return ends[0], ends[1]


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
               needed: int | None = None, family: int = 1) -> str:
    """One line: seeds per row for 80 % power at the observed spread, how uncertain that spread is, and (with
    ``target``, an assumed difference a − b) the seeds at that effect."""
    _check_relation(relation, margin)
    if difference.sd is None:
        return "at least 2 seeds per row are needed before any interval exists"
    if difference.zero_spread:
        return "the observed spread is zero, so it cannot size the next experiment: add seeds and look again"
    against = f" against the margin of {margin:.2f} {unit}".rstrip() if relation == "not_worse" else ""
    if needed is None:
        needed = seeds_needed(difference, relation, margin, None, cap, family)
    level = f"{100 * (1 - difference.confidence) / 2 / family:.3g} % one-sided level"
    line = f"{_needed_text(needed, difference.estimate, unit, cap)}{against} at this spread ({level})"
    low, high = seeds_range(difference, relation, margin, None, cap, family)
    df = difference.df
    degrees = f"{df:.0f} degree{'s' if round(df) != 1 else ''}" if float(df).is_integer() else f"{df:.1f} degrees"
    line += (f"; the spread comes from {degrees} of freedom, and over its 95 % interval the count runs from "
             f"{_count(low, cap)} to {_count(high, cap)}")
    if target is not None:
        n = seeds_needed(difference, relation, margin, target, cap, family)
        line += f"; {'≈ ' + str(n) if n else f'more than {cap}'} at a target {_amount(target, unit)}"
    return line


def _count(n: int | None, cap: int) -> str:
    return str(n) if n else f"more than {cap}"


def _needed_text(n: int | None, effect: float, unit: str, cap: int) -> str:
    if n is None:
        return f"even {cap} seeds per row would not give {100 * POWER:.0f} % power to resolve a {_amount(effect, unit)}"
    return f"≈ {n} seeds per row give {100 * POWER:.0f} % power to resolve a {_amount(effect, unit)}"


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
    if d.left_out:
        how += f"; seeds left out: {', '.join(map(str, d.left_out))}"
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


def format_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g} %"


def _amount(x: float, unit: str) -> str:
    return f"difference of {_signed(x)} {unit}".rstrip()
