"""Verdicts on the paper's four findings, from the rows of a sweep, with one explicit rule.

Rule. Two rows are compared on their score over seeds (test ppl, lower is better, for language models; MQAR
accuracy, higher is better, for recall runs; else val ppl). With n_a, n_b >= 2 seeds the difference counts only when

    |mean_a - mean_b| > 2 * pooled_std,        pooled_std = sqrt((std_a^2 + std_b^2) / 2)

and is otherwise a tie. With one seed on either side the comparison is *undecided*: seed noise is unknown.

Comparisons are between rows whose configurations differ in exactly one key (besides the seed): e.g.
``model.decay.share`` for sharing. A configuration listed in several studies is counted once. Softmax rows
are left out (the findings are about decay linear attention).

1. Decay range matters: the best and the worst linear rows of the parameterization study (decay kinds and
   initial decay p) differ significantly. Rows are ranked within one score metric (a study may mix language-model
   and recall rows; perplexity and accuracy are never ranked against each other). Supported: they differ for
   some metric; not supported: a decided tie for every metric; else inconclusive.
2. Sharing can push decay too far: some shared row is significantly worse than its unshared twin (its median
   decay is shown beside). Supported: at least one such pair; not supported: every pair decided, none worse.
3. Vector usually beats scalar: vector significantly better in a majority of granularity pairs. Not supported:
   that majority is out of reach even if every undecided pair went to vector.
4. RoPE rarely helps: RoPE-type encodings (rope, lrpe) significantly better than none in a minority of pairs.
   Supported: that stays a minority even if every undecided pair went to RoPE; not supported: a majority of
   pairs are decided RoPE wins.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from decaylab.report.data import Row, SweepData, sorted_rows

SIGMA_FACTOR = 2.0
ROPE_LIKE = ("rope", "lrpe")
DIGITS = {"mqar_accuracy": 3}  # decimals in the evidence lines (accuracies differ in the third decimal)


@dataclasses.dataclass
class Comparison:
    a: Row  # the "treatment": shared, vector, RoPE, best
    b: Row  # the "control": unshared, scalar, no PE, worst
    metric: str
    diff: float | None  # improvement of a over b in score units (positive: a is better)
    margin: float | None  # SIGMA_FACTOR * pooled std; None when undecided
    outcome: str  # "a better", "b better", "tie", "undecided"

    def describe(self) -> str:
        sa, sb = self.a.stat(self.metric), self.b.stat(self.metric)
        d = DIGITS.get(self.metric, 2)
        text = (f"{self.a.label} {_fmt(sa.mean, sa.std, d)} vs {self.b.label} {_fmt(sb.mean, sb.std, d)} "
                f"({self.metric})")  # fmt: skip
        if self.margin is None:
            return f"{text}: undecided (n={sa.n} and n={sb.n} seeds)"
        return f"{text}: |Δ| = {abs(self.diff):.{d}f} vs 2σ = {self.margin:.{d}f} → {self.outcome}"


@dataclasses.dataclass
class Verdict:
    number: int
    claim: str
    verdict: str  # supported | not supported | inconclusive | no data
    reason: str
    evidence: list[str]


def _fmt(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare(a: Row, b: Row) -> Comparison | None:
    """a vs b on their common score metric; None when they have none in common."""
    if a.score is None or b.score is None or a.score[0] != b.score[0]:
        return None
    metric, higher, sa = a.score
    sb = b.stat(metric)
    diff = (sa.mean - sb.mean) if higher else (sb.mean - sa.mean)
    if sa.n < 2 or sb.n < 2:
        return Comparison(a, b, metric, diff, None, "undecided")
    margin = SIGMA_FACTOR * math.sqrt((sa.std**2 + sb.std**2) / 2)
    outcome = "tie" if abs(diff) <= margin else ("a better" if diff > 0 else "b better")
    return Comparison(a, b, metric, diff, margin, outcome)


def unique_linear_rows(data: SweepData) -> list[Row]:
    """One row per distinct configuration (first study wins), softmax rows left out."""
    seen, out = set(), []
    for study, _ in data.studies:
        for row in data.rows.get(study, []):
            key = tuple(row.run_ids)
            if key not in seen and not row.is_softmax:
                seen.add(key)
                out.append(row)
    return out


def pairs_differing_in(rows: list[Row], key: str) -> list[tuple[Row, Row]]:
    """Pairs of rows whose configs differ in ``key`` only."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            keys = set(a.config) | set(b.config)
            diff = [k for k in keys if a.config.get(k) != b.config.get(k)]
            if diff == [key]:
                out.append((a, b))
    return out


def _median_decay(row: Row, data: SweepData) -> float | None:
    pooled = [data.decay_stats.get(i, {}).get(0, {}) for i in row.run_ids]  # layer 0: all layers pooled
    values = [p["median"] for p in pooled if "median" in p]
    return sum(values) / len(values) if values else None


def finding_decay_range(data: SweepData) -> Verdict:
    claim = "The decay range matters: parameterizations with different decay ranges perform differently."
    by_metric: dict[str, list[Row]] = {}
    for row in data.rows.get("parameterization", []):
        if not row.is_softmax and row.score:
            by_metric.setdefault(row.score[0], []).append(row)
    groups = [rows for rows in by_metric.values() if len(rows) >= 2]
    if not groups:
        return Verdict(1, claim, "no data", "needs two linear rows with the same score metric in the "
                       "'parameterization' study", [])  # fmt: skip
    comparisons = []
    for rows in groups:
        ranked = sorted_rows(rows)  # best first, by the group's own metric and direction
        comparisons.append(compare(ranked[0], ranked[-1]))
    evidence = []
    for c in comparisons:
        evidence.append(c.describe())
        evidence += [f"median decay (all layers): {r.label} {_fmt(_median_decay(r, data), None)}" for r in (c.a, c.b)]
    outcomes = [c.outcome for c in comparisons]
    metrics = ", ".join(c.metric for c in comparisons)
    if "a better" in outcomes:
        verdict, reason = "supported", "best and worst parameterization differ by more than 2× the pooled seed std"
    elif all(o == "tie" for o in outcomes):
        verdict, reason = "not supported", "best and worst parameterization are within 2× the pooled seed std"
    else:
        verdict, reason = "inconclusive", "one seed: the spread cannot be separated from seed noise"
    return Verdict(1, claim, verdict, f"{reason} ({metrics})", evidence)


def finding_sharing(data: SweepData) -> Verdict:
    claim = "Sharing the decay with the key can push decay values too far and hurt."
    pairs = []
    for a, b in pairs_differing_in(unique_linear_rows(data), "model.decay.share"):
        shared, unshared = (a, b) if a.config["model.decay.share"] else (b, a)
        c = compare(shared, unshared)
        if c:
            pairs.append(c)
    if not pairs:
        return Verdict(2, claim, "no data", "no pair of rows differs only in model.decay.share", [])
    evidence = [
        c.describe() + f"; median decay {_fmt(_median_decay(c.a, data), None)} (shared) vs "
        f"{_fmt(_median_decay(c.b, data), None)}"
        for c in pairs
    ]
    hurts = sum(c.outcome == "b better" for c in pairs)
    undecided = sum(c.outcome == "undecided" for c in pairs)
    if hurts:
        return Verdict(2, claim, "supported", f"sharing is significantly worse in {hurts}/{len(pairs)} pairs", evidence)
    if undecided:
        return Verdict(2, claim, "inconclusive", f"{undecided}/{len(pairs)} pairs have one seed", evidence)
    return Verdict(2, claim, "not supported", "no shared model is significantly worse than its twin", evidence)


def _majority(
    data: SweepData, number: int, claim: str, key: str, treatment: Any, control: Any, want_win: bool
) -> Verdict:
    comparisons = []
    for a, b in pairs_differing_in(unique_linear_rows(data), key):
        va, vb = a.config[key], b.config[key]
        if va in treatment and vb == control:
            comparisons.append(compare(a, b))
        elif vb in treatment and va == control:
            comparisons.append(compare(b, a))
    comparisons = [c for c in comparisons if c]
    if not comparisons:
        return Verdict(number, claim, "no data", f"no pair of rows differs only in {key}", [])
    n = len(comparisons)
    wins = sum(c.outcome == "a better" for c in comparisons)
    undecided = sum(c.outcome == "undecided" for c in comparisons)
    counts = f"{wins}/{n} significant wins, {undecided} undecided"
    evidence = [c.describe() for c in comparisons]
    if want_win:  # "usually beats": a majority of wins
        if wins > n / 2:
            return Verdict(number, claim, "supported", counts + " (a majority)", evidence)
        if wins + undecided <= n / 2:
            return Verdict(number, claim, "not supported", counts + " (no majority possible)", evidence)
    else:  # "rarely helps": wins stay a minority
        if wins + undecided < n / 2:
            return Verdict(number, claim, "supported", counts + " (a minority)", evidence)
        if wins >= n / 2:
            return Verdict(number, claim, "not supported", counts + " (at least half)", evidence)
    return Verdict(number, claim, "inconclusive", counts + " (undecided pairs could swing it)", evidence)


def all_findings(data: SweepData) -> list[Verdict]:
    return [
        finding_decay_range(data),
        finding_sharing(data),
        _majority(data, 3, "Vector decay usually beats scalar decay under the same parameterization.",
                  "model.decay.granularity", ("vector",), "scalar", want_win=True),  # fmt: skip
        _majority(data, 4, "RoPE rarely gives decay linear attention a tangible benefit.",
                  "model.pos", ROPE_LIKE, "none", want_win=False),  # fmt: skip
    ]
