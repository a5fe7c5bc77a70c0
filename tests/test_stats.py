"""Textbook checks of replicate.stats: hand-checkable numbers, intervals equal to scipy's, deterministic.

t quantiles used by hand (two-sided 95 %): t(1) = 12.706, t(2) = 4.303, t(4) = 2.776, t(5) = 2.571,
t(6) = 2.447, t(8) = 2.306, t(10) = 2.228, t(11) = 2.201.
"""
import math

import numpy as np
import pytest
from scipy import stats as sps

from replicate import stats

# A strong seed effect shared by both rows (seed 2 is hard for both): the per-seed differences are
# −0.5, −0.4, −0.6 (mean −0.5, sd 0.1), while each row alone spreads by about 1 point.
A = {0: 7.0, 1: 8.0, 2: 9.0}
B = {0: 7.5, 1: 8.4, 2: 9.6}


def paired_rows(n: int, mean: float, sd: float) -> tuple[dict, dict]:
    """Rows over seeds 0..n−1 whose per-seed differences a − b have exactly this mean and sample sd."""
    z = np.arange(n) - (n - 1) / 2
    z = z / z.std(ddof=1)
    b = {s: 7.0 + 0.5 * s for s in range(n)}  # a seed effect, shared by both rows
    return {s: b[s] + mean + sd * z[s] for s in range(n)}, b


def row(n: int, mean: float, sd: float, first_seed: int = 0) -> dict:
    """One row of n values with exactly this mean and sample sd."""
    z = np.arange(n) - (n - 1) / 2
    return {first_seed + i: mean + sd * v for i, v in enumerate(z / z.std(ddof=1))}


# -- pairing --------------------------------------------------------------------------------------------------
def test_pairing_by_seed_turns_inconclusive_into_holds():
    paired = stats.compare(A, B)
    assert paired.paired and paired.df == 2
    assert paired.estimate == pytest.approx(-0.5)
    assert paired.sd == pytest.approx(0.1)
    half = 4.303 * 0.1 / math.sqrt(3)  # = 0.248
    assert paired.low == pytest.approx(-0.5 - half, abs=1e-3)
    assert paired.high == pytest.approx(-0.5 + half, abs=1e-3)
    assert stats.decide(paired, "lower").status == "holds"

    welch = stats.compare(A, B, pair=False)  # same numbers, each row's seed-to-seed spread in the way
    assert not welch.paired
    assert welch.estimate == pytest.approx(-0.5)
    assert welch.se == pytest.approx(math.sqrt((1.0 + 1.11) / 3))  # sd_a² = 1, sd_b² = 1.11
    assert welch.low < 0 < welch.high
    assert stats.decide(welch, "lower").status == "inconclusive"


def test_pairing_uses_the_seeds_both_rows_share_and_names_the_rest():
    b = {0: 7.5, 1: 8.4}  # a row one seed short: pair on seeds 0-1, leave seed 2 of A out
    d = stats.compare(A, b)
    assert d.paired and d.n_a == d.n_b == 2 and d.left_out == (2,)
    assert d.estimate == pytest.approx(((7.0 - 7.5) + (8.0 - 8.4)) / 2)
    assert d.mean_a == pytest.approx(7.5)  # the means of the paired seeds: estimate = mean_a − mean_b
    assert "seeds left out: 2" in stats.describe(d)


def test_fewer_than_two_shared_seeds_fall_back_to_welch():
    b = {0: 7.5, 3: 8.4, 4: 9.6}  # one seed in common: no pairing possible
    d = stats.compare(A, b)
    assert not d.paired and d.left_out == ()
    forced = stats.compare(A, {10: 7.5, 3: 8.4, 4: 9.6}, pair=False)
    assert (d.low, d.high, d.df) == pytest.approx((forced.low, forced.high, forced.df))


def test_a_zero_spread_difference_never_decides():
    """Errors lie on a 0.01 grid: two seeds can differ by exactly the same amount, a zero-width interval."""
    d = stats.compare({0: 22.10, 1: 23.00}, {0: 21.60, 1: 22.50})
    assert d.sd == pytest.approx(0, abs=1e-12)
    verdict = stats.decide(d, "lower")
    assert verdict.status == "inconclusive" and "zero spread" in verdict.reason
    assert stats.p_value(d) is None
    assert stats.decide(d, "not_worse", margin=0.5).status == "inconclusive"


def test_two_seeds_significant_by_two_se_but_not_by_t():
    a, b = {0: 7.0, 1: 7.2}, {0: 7.8, 1: 8.2}
    old_margin = 2 * math.sqrt(0.02 / 2 + 0.08 / 2)  # analysis' rule: 2·sqrt(sa²/na + sb²/nb) = 0.447
    assert abs(7.1 - 8.0) > old_margin  # the old rule says "holds"
    d = stats.compare(a, b)  # per-seed differences −0.8, −1.0: se 0.1, t(1) = 12.706
    assert d.paired and d.se == pytest.approx(0.1)
    assert (d.low, d.high) == pytest.approx((-0.9 - 1.2706, -0.9 + 1.2706), abs=1e-3)
    assert stats.decide(d, "lower").status == "inconclusive"
    assert stats.decide(stats.compare(a, b, pair=False), "lower").status == "inconclusive"


# -- verdicts -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift, status", [
    (0.1, "holds"),  # [−0.15, +0.35]: worse by 0.1 on average, but surely by less than 0.5
    (0.4, "inconclusive"),  # [+0.15, +0.65] straddles 0.5
    (0.9, "does not hold"),  # [+0.65, +1.15]: worse by more than the margin
])
def test_non_inferiority_on_each_side_of_the_margin(shift, status):
    a, b = paired_rows(3, shift, 0.1)  # half-width 4.303 · 0.1 / √3 = 0.248
    verdict = stats.decide(stats.compare(a, b), "not_worse", margin=0.5)
    assert verdict.status == status
    assert "margin +0.50" in verdict.reason


def test_non_inferiority_is_not_the_directional_test():
    a, b = paired_rows(3, 0.4, 0.1)  # surely worse, but not surely by more than the margin
    d = stats.compare(a, b)
    assert stats.decide(d, "lower").status == "does not hold"
    assert stats.decide(d, "not_worse", margin=0.5).status == "inconclusive"


def test_higher_is_lower_with_the_rows_swapped():
    assert stats.decide(stats.compare(B, A), "higher").status == "holds"
    assert stats.decide(stats.compare(A, B), "higher").status == "does not hold"
    assert stats.decide(stats.compare(B, A), "lower").status == "does not hold"


@pytest.mark.parametrize("a, b", [({0: 7.0}, {0: 7.5, 1: 7.7}), ({0: 7.0, 1: 7.1}, {1: 9.0}), ({0: 7.0}, {0: 9.0})])
def test_one_seed_on_either_side_is_inconclusive_with_the_n(a, b):
    d = stats.compare(a, b)
    assert d.low is None and d.high is None and d.se is None and not d.has_interval
    assert d.estimate == pytest.approx(np.mean(list(a.values())) - np.mean(list(b.values())))
    for relation, margin in (("lower", None), ("higher", None), ("not_worse", 5.0)):
        verdict = stats.decide(d, relation, margin)
        assert verdict.status == "inconclusive"
        assert "n=1" in verdict.reason and f"n={len(a)} vs {len(b)}" in verdict.reason
    assert stats.seeds_needed(d) is None
    assert "at least 2 seeds" in stats.suggestion(d)


def test_bad_input_is_refused():
    d = stats.compare(A, B)
    with pytest.raises(ValueError):
        stats.decide(d, "not_worse")  # no margin
    with pytest.raises(ValueError):
        stats.decide(d, "not_worse", margin=0.0)
    with pytest.raises(ValueError):
        stats.decide(d, "better")
    with pytest.raises(ValueError):
        stats.compare({}, B)
    with pytest.raises(ValueError):
        stats.compare({0: float("nan"), 1: 7.0}, B)
    with pytest.raises(ValueError):
        stats.compare(A, B, confidence=95)


# -- the same intervals as scipy ------------------------------------------------------------------------------
@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("a, b", [
    (A, B),
    ({0: 7.1, 1: 7.5}, {0: 7.6, 1: 8.3}),
    ({0: 6.93, 1: 7.21, 2: 7.02, 3: 7.40, 4: 7.15}, {0: 7.30, 1: 7.28, 2: 7.55, 3: 7.61, 4: 7.20}),
])
def test_intervals_equal_scipy(a, b, confidence):
    xa, xb = [a[s] for s in sorted(a)], [b[s] for s in sorted(b)]
    paired = stats.compare(a, b, confidence)
    expected = sps.ttest_rel(xa, xb).confidence_interval(confidence)
    assert (paired.low, paired.high) == pytest.approx((expected.low, expected.high), rel=1e-10)
    welch = stats.compare(a, b, confidence, pair=False)
    result = sps.ttest_ind(xa, xb, equal_var=False)
    expected = result.confidence_interval(confidence)
    assert (welch.low, welch.high) == pytest.approx((expected.low, expected.high), rel=1e-10)
    assert welch.df == pytest.approx(result.df)


def test_unequal_sizes_equal_scipy_welch():
    a, b = {0: 7.1, 1: 7.5, 2: 7.3}, {5: 7.6, 6: 8.0}  # no seed in common
    d = stats.compare(a, b)
    result = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert not d.paired and d.df == pytest.approx(result.df)
    assert (d.low, d.high) == pytest.approx(tuple(result.confidence_interval(0.95)), rel=1e-10)


# -- p-values and Holm --------------------------------------------------------------------------------------------
def test_p_values_equal_scipy():
    d = stats.compare(A, B)
    assert stats.p_value(d) == pytest.approx(sps.ttest_rel(list(A.values()), list(B.values())).pvalue)
    # non-inferiority: the null is "worse by exactly the margin"
    shifted = {s: v - 0.5 for s, v in A.items()}
    assert stats.p_value(d, null=0.5) == pytest.approx(
        sps.ttest_rel(list(shifted.values()), list(B.values())).pvalue)
    assert stats.p_value(stats.compare({0: 7.0}, B)) is None


def test_holm_by_hand():
    """Holm (1979): sort p ascending; the k-th smallest (k from 1) is multiplied by m − k + 1, then the
    adjusted values are made non-decreasing. p = 0.01, 0.04, 0.03, 0.005 (m = 4):
    sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> 0.06 (monotone)."""
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    # a claim without a p-value (no interval) stays in the family as one that cannot be rejected
    assert stats.holm([0.01, None]) == pytest.approx([0.02, None], nan_ok=True)


def test_decisions_at_an_adjusted_p_value():
    d = stats.compare(A, B)  # raw p = 0.0097 (paired, lower)
    assert stats.decide(d, "lower").status == "holds"
    assert stats.decide(d, "lower", p=0.06).status == "inconclusive"
    assert stats.decide(d, "higher", p=0.02).status == "does not hold"


# -- seeds needed ---------------------------------------------------------------------------------------------
def _power(n: int, distance: float, sd: float, alpha: float = 0.025) -> float:
    """One-sided paired t-test power, straight from the noncentral t."""
    return sps.nct.sf(sps.t.ppf(1 - alpha, n - 1), n - 1, distance / (sd / math.sqrt(n)))


def test_seeds_needed_is_the_first_n_with_80_percent_power():
    a, b = paired_rows(3, -0.2, 0.3)
    d = stats.compare(a, b)
    n = stats.seeds_needed(d)
    assert _power(n, 0.2, 0.3) >= 0.8 > _power(n - 1, 0.2, 0.3)
    assert n == 20
    # the same n, checked by simulation: 4 000 experiments of n seeds each reject about 80 % of the time
    rng = np.random.default_rng(0)
    diffs = rng.normal(-0.2, 0.3, size=(4000, n))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(t < -sps.t.ppf(0.975, n - 1)) == pytest.approx(0.8, abs=0.025)
    # Bonferroni's level over a family of 4 needs more seeds
    assert stats.seeds_needed(d, family=4) > n


def test_seeds_needed_says_how_uncertain_the_spread_is():
    d = stats.compare(*paired_rows(2, -0.4, 0.3))  # a spread from 1 degree of freedom
    low, high = stats.seeds_range(d)
    assert low < stats.seeds_needed(d) < (high or stats.MAX_SEEDS + 1)
    line = stats.suggestion(d)
    assert "80 % power" in line and "1 degree of freedom" in line


def test_seeds_needed_welch_uses_equal_rows_and_welch_df():
    d = stats.compare(row(3, 7.0, 0.3), row(3, 7.4, 0.3, first_seed=10))  # no common seeds
    assert not d.paired and d.sd == pytest.approx(0.3 * math.sqrt(2))
    n = stats.seeds_needed(d)

    def power(n):  # equal sds: df = 2n − 2, se = sqrt(2)·0.3/√n
        df = 2 * n - 2
        return sps.nct.sf(sps.t.ppf(0.975, df), df, 0.4 / (0.3 * math.sqrt(2) / math.sqrt(n)))

    assert power(n) >= 0.8 > power(n - 1)


def test_seeds_needed_non_inferiority_measures_from_the_margin():
    below = stats.compare(*paired_rows(3, 0.4, 0.1))  # 0.1 below the margin
    n = stats.seeds_needed(below, "not_worse", margin=0.5)
    assert _power(n, 0.1, 0.1) >= 0.8 > _power(n - 1, 0.1, 0.1)
    above = stats.compare(*paired_rows(3, 0.65, 0.1))  # 0.15 above: resolving "does not hold"
    n = stats.seeds_needed(above, "not_worse", margin=0.5)
    assert _power(n, 0.15, 0.1) >= 0.8 > _power(n - 1, 0.15, 0.1)
    assert "against the margin of 0.50 points" in stats.suggestion(below, "not_worse", 0.5)


def test_seeds_needed_at_a_target_effect():
    d = stats.compare(*paired_rows(3, -0.2, 0.3))
    n = stats.seeds_needed(d, effect=-0.5)
    assert _power(n, 0.5, 0.3) >= 0.8 > _power(n - 1, 0.5, 0.3)
    assert f"≈ {n} at a target difference of −0.50 points" in stats.suggestion(d, target=-0.5)


def test_seeds_needed_unreachable_is_none():
    d = stats.compare(*paired_rows(3, -0.2, 0.3))
    assert stats.seeds_needed(d, cap=11) is None
    assert stats.seeds_needed(d, effect=0.0) is None
    assert stats.suggestion(d, cap=11).startswith("even 11 seeds per row would not give 80 % power")


# -- published against ours and the detail lines --------------------------------------------------------------
def test_against_published():
    ours = {0: 7.0, 1: 7.2, 2: 7.4}  # mean 7.2, sd 0.2: 7.2 ± 4.303 · 0.2/√3 = [6.703, 7.697]
    inside = stats.against_published(ours, 7.5)
    expected = sps.ttest_1samp(list(ours.values()), 7.5).confidence_interval(0.95)
    assert (inside.low, inside.high) == pytest.approx((expected.low, expected.high))
    assert (inside.low, inside.high) == pytest.approx((6.703, 7.697), abs=1e-3)
    assert inside.position == "inside" and inside.difference == pytest.approx(-0.3)
    assert stats.against_published(ours, 6.5).position == "below"
    assert stats.against_published([7.0, 7.2, 7.4], 8.0).position == "above"
    single = stats.against_published({0: 7.0}, 9.0)
    assert single.position == "no interval" and single.low is None
    assert stats.describe_published(inside) == ("ours 7.20 [6.70, 7.70] (95 % CI, n=3); "
                                                 "published 7.50 lies inside")
    assert stats.describe_published(single) == "ours 7.00 (n=1, no interval); published 9.00"


def test_detail_lines():
    assert (stats.describe(stats.compare(A, B))
            == "difference −0.50 points [−0.75, −0.25] (95 % CI, paired by seed, n=3)")
    welch = stats.describe(stats.compare({0: 7.1, 1: 7.5}, {5: 7.6, 6: 8.0, 7: 7.8}))
    assert welch.startswith("difference −0.50 points [") and welch.endswith("(95 % CI, Welch, n=2 vs 3)")
    assert stats.describe(stats.compare({0: 7.0}, B)) == "difference −1.50 points (no interval: n=1 vs 3)"


def test_every_claim_relation_is_decided_by_a_test_stats_knows():
    """The claim vocabulary (spec.RELATIONS) names the statistical test of each relation: one mapping, no copy."""
    from replicate import spec

    assert {relation.test for relation in spec.RELATIONS.values()} <= set(stats.RELATIONS)
    assert spec.RELATIONS["steadier_gradients"].test == "lower"  # smaller gradient-norm spread
