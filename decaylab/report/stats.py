"""The statistics behind the report's verdicts: paired differences, a population estimate across pairs, and a
rank-correlation permutation test. One method for every finding; the finding rules are in findings.py.

Scores on a comparable scale. A score metric is mapped to a *gain* g (higher is better) in which differences
mean the same across pairs of very different level:

    perplexity (test_ppl, val_ppl):  g = -ln(ppl)   so  g_a - g_b = ln(ppl_b / ppl_a)
    MQAR accuracy:                    g = accuracy   so  g_a - g_b is in accuracy points

ln ppl is the model's mean cross-entropy per token, so a gain in g is a difference of losses in nats, and
``100 (1 - exp(-(g_a - g_b)))`` is the percentage by which a's perplexity is lower (how reports write it). A
raw perplexity difference would let one pair at ppl 300 outweigh ten pairs at ppl 30. Accuracy is bounded and
starts near chance (about 1/32 on the quick MQAR task), where a log would blow small differences up, so it
stays linear.

Paired differences. A pair is two configurations that differ in one setting only (treatment a, control b).
Seed s of a is paired with seed s of b (same train.seed: the same training batches in the same order), giving
``d_s = g(a_s) - g(b_s)`` for every seed both finished; a seed only one side finished is left out (pairing it
with another seed would mix seed noise into the difference), and a pair with no common seed is listed but not
counted.

Population estimate. The claim is about the pairs as a population (every parameterization of the study), so the
unit of replication is the pair: each pair gives its mean over seeds ``m_j``, and the estimate is their mean with
a Student t interval over the k pairs,

    theta = mean_j m_j,   CI = theta +- t(1 - alpha/2, k - 1) * sd(m_j) / sqrt(k),   alpha = 0.05.

Seed noise is inside sd(m_j), so pairs with one seed still count. With a single pair the population is that
pair and its seeds are the units (df = n_seeds - 1); one pair with one seed has no interval. A difference is
*significant* when its interval excludes 0.

Why this test: a sign test on k pair means cannot reach alpha = 0.05 with 5 pairs or fewer (its smallest
two-sided p is 2 / 2^k), and the sharing study has 5 pairs; a 95 % percentile bootstrap over pairs covers the
true mean far less often with so few pairs (about 76 % with 3 pairs, 84 % with 5, simulated normal pair
means). The t interval is exact for normal pair means, widens honestly when pairs are few, and needs no random
numbers.

Rank correlation. For a relation between a row's score and its learned median decay: Spearman's rho over the rows
(row means over seeds), two-sided p-value from a permutation test (all n! orderings up to 8 rows, else 20,000
random ones from a fixed seed, so a report is reproducible), and a 95 % interval from Fisher's z with the
Bonett-Wright variance ``(1 + rho^2 / 2) / (n - 3)`` (n >= 4). Ranks make it independent of how decay is scaled.
With n rows the smallest two-sided p is 2 / n!: at least 5 rows are needed to reach alpha = 0.05.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
PERMUTATIONS = 20_000  # random orderings when n! is larger than this
EXACT_ROWS = 8  # 8! = 40,320 orderings: exact enumeration stays fast
RNG_SEED = 0  # fixed, so the same results give the same p-values


@dataclasses.dataclass(frozen=True)
class Scale:
    """How values become gains (higher is better) and how a gain difference is written."""

    name: str
    gain: Callable[[float], float]
    margin: float  # smallest gain difference that matters in practice (findings.py says where it is used)
    show: Callable[[float], float]  # a gain difference as the number a reader sees, followed by unit
    unit: str
    digits: int = 1

    def fmt(self, value: float | None, sign: bool = True, unit: bool = True) -> str:
        if value is None:
            return "n/a"
        return f"{self.show(value):{'+' if sign else ''}.{self.digits}f}{self.unit if unit else ''}"


# Margins, fixed before any result was looked at: the smallest difference taken to be worth acting on, 1 % lower
# perplexity, or one accuracy point (about 20 of the 2,048 MQAR test queries). A perplexity gain d is shown as
# 100 (1 - exp(-d)), the percentage by which the (geometric mean) perplexity is lower; negative: higher.
LOG_PPL = Scale("% lower perplexity", lambda v: -math.log(v), margin=-math.log(0.99),
                show=lambda d: 100 * -math.expm1(-d), unit="%")  # fmt: skip
ACCURACY = Scale("accuracy points", lambda v: v, margin=0.01, show=lambda d: 100 * d, unit=" pts")
SCALES = {"test_ppl": LOG_PPL, "val_ppl": LOG_PPL, "mqar_accuracy": ACCURACY}


def scale_of(metric: str) -> Scale:
    if metric not in SCALES:
        raise KeyError(f"no scale for score metric {metric!r}; add it to decaylab.report.stats.SCALES")
    return SCALES[metric]


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % t interval (low, high are None when there are fewer than two units)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    unit: str  # "pairs" or "seeds"

    def above(self, x: float) -> bool:
        return self.low is not None and self.low > x

    def below(self, x: float) -> bool:
        return self.high is not None and self.high < x

    def interval(self, scale: Scale) -> str:
        """'[low, high]' in the scale's numbers (unit left out), or 'no CI'."""
        if self.low is None:
            return "no CI"
        return f"[{scale.fmt(self.low, unit=False)}, {scale.fmt(self.high, unit=False)}]"

    def fmt(self, scale: Scale) -> str:
        return f"{scale.fmt(self.mean)} {self.interval(scale)}"


def mean_ci(values: Sequence[float], unit: str) -> Estimate:
    """Mean and Student t interval (df = n - 1) of independent values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return Estimate(mean, None, None, n, unit)
    half = float(sps.t.ppf(1 - ALPHA / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, mean - half, mean + half, n, unit)


@dataclasses.dataclass(frozen=True)
class Paired:
    """Seed-paired differences d_s = gain(a_s) - gain(b_s) of a treatment a over a control b."""

    a: str
    b: str
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]

    @property
    def estimate(self) -> Estimate | None:
        return mean_ci(self.diffs, "seeds") if self.diffs else None


def paired(
    a: str, values_a: dict[int, float], b: str, values_b: dict[int, float], gain: Callable[[float], float]
) -> Paired:
    """Pair seed s of a with seed s of b, over the seeds both have."""
    seeds = tuple(sorted(set(values_a) & set(values_b)))
    return Paired(a, b, seeds, tuple(gain(values_a[s]) - gain(values_b[s]) for s in seeds))


def population(pairs: Sequence[Paired]) -> Estimate | None:
    """Mean over pairs of each pair's mean difference, t interval over pairs; one pair: over its seeds."""
    used = [p for p in pairs if p.diffs]
    if not used:
        return None
    if len(used) == 1:
        return used[0].estimate
    return mean_ci([float(np.mean(p.diffs)) for p in used], "pairs")


def seed_span(pairs: Sequence[Paired]) -> str:
    """'3 seeds' or '1-3 seeds' over the pairs that count."""
    counts = sorted({len(p.diffs) for p in pairs if p.diffs})
    if not counts:
        return "no seeds"
    low, high = counts[0], counts[-1]
    return f"{low} seed{'s' * (high > 1)}" if low == high else f"{low}–{high} seeds"


@dataclasses.dataclass(frozen=True)
class Correlation:
    rho: float
    low: float | None
    high: float | None
    p: float
    n: int
    exact: bool  # p from all orderings (else from PERMUTATIONS random ones)


def _pearson_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    yc = ys - ys.mean(axis=-1, keepdims=True)
    return (yc @ xc) / (np.sqrt((xc**2).sum()) * np.sqrt((yc**2).sum(axis=-1)))


def spearman(x: Sequence[float], y: Sequence[float]) -> Correlation | None:
    """Spearman's rho of x and y with a permutation p-value and a Fisher-z interval; None when either is constant."""
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    n = len(rx)
    if n < 2 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    rho = float(_pearson_rows(rx, ry[None, :])[0])
    exact = n <= EXACT_ROWS
    if exact:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(RNG_SEED)
        orders = rng.permuted(np.tile(np.arange(n), (PERMUTATIONS, 1)), axis=1)
    null = _pearson_rows(rx, ry[orders])
    hits = int(np.sum(np.abs(null) >= abs(rho) - 1e-12))
    p = hits / len(orders) if exact else (hits + 1) / (len(orders) + 1)
    low = high = None
    if n >= 4:
        z = math.atanh(max(min(rho, 0.999999), -0.999999))
        half = float(sps.norm.ppf(1 - ALPHA / 2)) * math.sqrt((1 + rho**2 / 2) / (n - 3))
        low, high = math.tanh(z - half), math.tanh(z + half)
    return Correlation(rho, low, high, p, n, exact)
