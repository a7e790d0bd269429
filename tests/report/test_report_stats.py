"""The verdicts' statistics: t intervals, seed pairing, the population estimate, Spearman with permutations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decaylab.report.data import SCORES
from decaylab.report.stats import (
    ACCURACY,
    LOG_PPL,
    SCALES,
    Paired,
    mean_ci,
    paired,
    population,
    scale_of,
    seed_span,
    spearman,
)


def test_mean_ci_is_the_student_t_interval():
    est = mean_ci([1.0, 2.0, 3.0], "seeds")  # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert est.mean == 2.0 and est.n == 3 and est.unit == "seeds"
    assert est.low == pytest.approx(2 - 4.302653 / math.sqrt(3)) and est.high == pytest.approx(2 + 4.302653 / 3**0.5)
    assert est.above(-0.5) and not est.above(0) and est.below(5) and not est.below(4)
    single = mean_ci([0.3], "seeds")
    assert single.low is None and single.high is None
    assert not single.above(-1) and not single.below(1)  # one value: nothing is significant
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([], "pairs")


def test_seeds_are_paired_by_number_and_unmatched_seeds_left_out():
    a = {0: 100.0, 1: 110.0, 2: 120.0}
    b = {0: 110.0, 2: 150.0, 3: 90.0}  # seed 1 failed on b, seed 3 only on b
    p = paired("a", a, "b", b, LOG_PPL.gain)
    assert p.seeds == (0, 2)
    assert p.diffs == pytest.approx((math.log(110 / 100), math.log(150 / 120)))  # positive: a has lower ppl
    acc = paired("a", {0: 0.5}, "b", {0: 0.3}, ACCURACY.gain)
    assert acc.diffs == pytest.approx((0.2,))  # accuracy: higher is better, linear
    assert paired("a", {0: 1.0}, "b", {1: 1.0}, ACCURACY.gain).estimate is None  # no common seed


def test_population_uses_pairs_as_units_and_a_single_pair_its_seeds():
    p1 = paired("a", {0: 0.5, 1: 0.6}, "b", {0: 0.3, 1: 0.3}, ACCURACY.gain)  # mean 0.25
    p2 = paired("c", {0: 0.4, 1: 0.4}, "d", {0: 0.3, 1: 0.35}, ACCURACY.gain)  # mean 0.075
    empty = paired("e", {0: 0.4}, "f", {1: 0.4}, ACCURACY.gain)
    est = population([p1, p2, empty])  # the pair without a common seed is not counted
    assert est.unit == "pairs" and est.n == 2 and est.mean == pytest.approx(0.1625)
    assert est.low == pytest.approx(0.1625 - 12.7062 * 0.175 / math.sqrt(2) / math.sqrt(2), rel=1e-4)
    one = population([p1, empty])
    assert one.unit == "seeds" and one.n == 2 and one.mean == pytest.approx(0.25)
    assert population([empty]) is None
    assert seed_span([p1, p2]) == "2 seeds"
    assert seed_span([p1, paired("g", {0: 1}, "h", {0: 1}, float)]) == "1–2 seeds"


def test_population_interval_keeps_its_level_with_few_pairs_and_seeds():
    # No effect on average: pairs with offsets of their own (heterogeneous) plus seed noise. A 95% interval
    # must exclude 0 in about 5% of such sweeps, also with 3 pairs of 2 seeds or a single pair of 3 seeds.
    rng = np.random.default_rng(7)
    for k, n, spread in ((3, 2, 0.0), (5, 3, 1.0), (1, 3, 0.0)):
        hits = 0
        for _ in range(2000):
            offsets = rng.normal(0, spread, k)
            pairs = [Paired("a", "b", tuple(range(n)), tuple(o + rng.normal(0, 1, n))) for o in offsets]
            est = population(pairs)
            hits += est.above(0) or est.below(0)
        assert 0.03 < hits / 2000 < 0.07, (k, n, spread, hits / 2000)


def test_spearman_exact_and_random_permutations():
    perfect = spearman([0.1, 0.5, 0.8, 0.9, 0.99], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert perfect.rho == pytest.approx(1.0) and perfect.exact
    assert perfect.p == pytest.approx(2 / 120)  # identity and reversal of 5! orderings reach |rho| = 1
    assert perfect.low > 0.0 and perfect.high == pytest.approx(1.0)
    three = spearman([0.1, 0.5, 0.9], [1.0, 2.0, 3.0])
    assert three.p == pytest.approx(2 / 6) and three.low is None  # too few rows for an interval or for alpha
    assert spearman([0.5, 0.5, 0.5], [1.0, 2.0, 3.0]) is None  # decays do not vary: no correlation
    xs = [0.1 * i for i in range(10)]
    ys = [1, 3, 2, 5, 4, 7, 6, 9, 8, 10]
    big = spearman(xs, ys)
    assert not big.exact and 0 < big.p < 0.01 and big.rho > 0.9
    assert spearman(xs, ys).p == big.p  # fixed RNG seed: the same data give the same p-value
    noise = spearman(xs, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    assert noise.p > 0.05 and noise.low < 0 < noise.high


def test_every_score_metric_has_a_scale():
    assert {name for name, _ in SCORES} <= set(SCALES)
    assert LOG_PPL.fmt(math.log(2)) == "+50.0%" and LOG_PPL.fmt(-math.log(2)) == "-100.0%"  # half, double ppl
    assert LOG_PPL.fmt(0.0123) == "+1.2%" and ACCURACY.fmt(-0.05) == "-5.0 pts" and LOG_PPL.fmt(None) == "n/a"
    with pytest.raises(KeyError, match="add it to decaylab.report.stats.SCALES"):
        scale_of("bleu")
