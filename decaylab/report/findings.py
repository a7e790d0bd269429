"""Verdicts on the paper's four findings, each tested the way its claim is worded, with one method (stats.py).

Every verdict is ``supported``, ``contradicted`` or ``inconclusive`` (``no data`` when the sweep has nothing to
test), with one sentence saying why. Rows are compared within one score metric (test ppl or MQAR accuracy, see
data.SCORES), on the gain scale of stats.py (ln ppl for perplexity, points for accuracy); softmax rows are left
out, and a configuration listed in several studies counts once. A pair is two rows whose configurations differ
in one key only; its seeds are paired; the population estimate is the mean over pairs with a 95 % t interval
(alpha = 0.05). M is the practical margin of the scale (1 % lower perplexity, 1 accuracy point).

1. Decay range matters (rows of the ``parameterization`` study): Spearman's rho between a row's learned median
   decay and its score, permutation p-value. Contradicted if the best and the worst row differ by less than M
   (their paired interval lies inside (-M, M)) although their median decays span at least MIN_DECADES decades
   of memory length -log10(1 - decay); else supported if p < alpha; else inconclusive. Contradiction is checked
   first: rows a decade of memory apart that score the same outweigh a rank trend too small to matter.
2. Sharing can push decay too far and hurt (pairs in ``model.decay.share``): the score half (shared minus
   unshared gain) and the mechanism half, the distance of the median decay to the nearer of 0 and 1 in decades,
   ``log10 dist(unshared) - log10 dist(shared)`` (positive: the shared decay moved toward an extreme). Supported
   if shared is significantly worse and its decay significantly closer to an extreme; contradicted if a harm
   larger than M is excluded (lower bound > -M) or the decay moved significantly away from the extremes; else
   inconclusive.
3. Vector usually beats scalar (pairs in ``model.decay.granularity``): supported if vector's mean gain is
   significantly positive; contradicted if a vector benefit of M or more is excluded (upper bound < M); else
   inconclusive.
4. RoPE rarely helps (pairs in ``model.pos``, rope vs none): supported if a RoPE benefit of M or more is
   excluded (upper bound < M); contradicted if RoPE is significantly better by an estimated M or more; else
   inconclusive. LRPE and TPE against none are reported by the same rule as lines beyond the paper.

A study that mixes metrics gets one test per metric: the finding is supported if some metric supports it and
none contradicts it, contradicted in the mirror case, else inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from decaylab.report.data import Row, SweepData, decay_medians
from decaylab.report.stats import (
    ACCURACY,
    ALPHA,
    LOG_PPL,
    PERMUTATIONS,
    Estimate,
    Paired,
    Scale,
    paired,
    population,
    scale_of,
    seed_span,
    spearman,
)

MIN_DECADES = 1.0  # "contradicted" for finding 1 needs rows whose memory lengths differ by 10x (e.g. 0.9 vs 0.99)
DECAY_FLOOR = 1e-6  # distances to 0 or 1 below this are float32 rounding of the decay, not a smaller distance
DECADES = Scale("decades toward 0 or 1", lambda v: v, margin=0.0, show=lambda d: d, unit=" decades", digits=2)
DIGITS = {"mqar_accuracy": 3}  # decimals of raw scores in evidence lines

METHOD = (
    "Method: a pair is two configurations that differ in one setting only; seed s of one is paired with seed s "
    "of the other. Differences are gains (the ln ratio of perplexities, shown as % lower perplexity; accuracy "
    "points for MQAR), averaged over seeds per pair, then over pairs, with a 95 % Student t interval over the "
    "pairs (one pair: over its seeds); "
    f"α = {ALPHA:g}, significant when the interval excludes 0. Practical margin M: "
    f"{LOG_PPL.fmt(LOG_PPL.margin, False)} lower perplexity, {ACCURACY.fmt(ACCURACY.margin, False)} of accuracy. "
    "Finding 1 uses Spearman's ρ between score and learned median decay (permutation p). Verdicts are supported, "
    "contradicted (the data rule the claim out) or inconclusive (too little evidence either way); "
    "docs/sweeps.md gives each rule."
)


@dataclasses.dataclass
class Verdict:
    number: int
    claim: str
    verdict: str  # supported | contradicted | inconclusive | no data
    reason: str
    evidence: list[str]
    beyond: list[Verdict] = dataclasses.field(default_factory=list)  # related tests beyond the paper (finding 4)


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


def score_pair(a: Row, b: Row) -> tuple[str, Paired] | None:
    """(metric, seed-paired gains of a over b) on the rows' common score metric; None without one."""
    if a.score is None or b.score is None or a.score[0] != b.score[0]:
        return None
    metric = a.score[0]
    return metric, paired(a.label, a.stat(metric).by_seed(), b.label, b.stat(metric).by_seed(), scale_of(metric).gain)


def _decades_to_extreme(decay: float) -> float:
    return math.log10(max(min(decay, 1 - decay), DECAY_FLOOR))


def _memory_decades(decay: float) -> float:
    return -math.log10(max(1 - decay, DECAY_FLOOR))


def _combine(number: int, claim: str, parts: dict[str, tuple[str, str]], evidence: list[str]) -> Verdict:
    """One verdict from per-metric (verdict, reason): supported/contradicted only without the opposite."""
    if len(parts) == 1:
        (verdict, reason), = parts.values()  # fmt: skip
        return Verdict(number, claim, verdict, reason, evidence)
    found = {v for v, _ in parts.values()}
    if "supported" in found and "contradicted" not in found:
        verdict = "supported"
    elif "contradicted" in found and "supported" not in found:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return Verdict(number, claim, verdict, "; ".join(f"{m}: {r}" for m, (_, r) in parts.items()), evidence)


def pair_line(p: Paired, scale: Scale) -> str:
    if not p.diffs:
        return f"{p.a} vs {p.b}: no common finished seed (not counted)"
    est = p.estimate
    if est.low is None:
        return f"{p.a} vs {p.b}: {scale.fmt(est.mean)} (1 seed, no CI)"
    return f"{p.a} vs {p.b}: {est.fmt(scale)} ({est.n} seeds)"


def population_line(pairs: list[Paired], est: Estimate, scale: Scale, metric: str, a: str, b: str) -> str:
    used = [p for p in pairs if p.diffs]
    ests = [p.estimate for p in used]
    ahead = sum(float(np.mean(p.diffs)) > 0 for p in used)
    wins, losses = sum(e.above(0) for e in ests), sum(e.below(0) for e in ests)
    one_seed = sum(e.low is None for e in ests)
    units = f"over {len(used)} pairs ({seed_span(used)})" if est.unit == "pairs" else f"over {est.n} seeds of 1 pair"
    counts = (f"{a} ahead in {ahead}/{len(used)} pairs, significantly in {wins}; {b} significantly in {losses}; "
              f"{len(used) - wins - losses - one_seed} without a significant difference")  # fmt: skip
    counts += f", {one_seed} with one seed" if one_seed else ""
    return f"population ({metric}, {scale.name}): mean {est.fmt(scale)} {units}; {counts}"


def _why(est: Estimate, scale: Scale, pairs: list[Paired], what: str) -> str:
    units = f"{est.n} pairs, {seed_span(pairs)}" if est.unit == "pairs" else f"1 pair, {seed_span(pairs)}"
    ci = "no CI" if est.low is None else f"95% CI {est.interval(scale)}"
    return f"{what} {scale.fmt(est.mean)} ({ci}; {units})"


def _grouped(
    data: SweepData, key: str, is_treatment: Callable, is_control: Callable
) -> dict[str, list[tuple[Row, Row, Paired]]]:
    """Per score metric, (treatment, control, seed-paired gains) for rows differing only in ``key``."""
    out: dict[str, list[tuple[Row, Row, Paired]]] = {}
    for a, b in pairs_differing_in(unique_linear_rows(data), key):
        va, vb = a.config.get(key), b.config.get(key)
        if is_treatment(vb) and is_control(va):
            a, b = b, a
        elif not (is_treatment(va) and is_control(vb)):
            continue
        scored = score_pair(a, b)
        if scored:
            out.setdefault(scored[0], []).append((a, b, scored[1]))
    return out


def finding_decay_range(data: SweepData) -> Verdict:
    claim = "The decay range matters: parameterizations with different decay ranges perform differently."
    by_metric: dict[str, list[Row]] = {}
    for row in data.rows.get("parameterization", []):
        if not row.is_softmax and row.score:
            by_metric.setdefault(row.score[0], []).append(row)
    groups = {m: rows for m, rows in by_metric.items() if len(rows) >= 2}
    if not groups:
        return Verdict(1, claim, "no data", "needs two linear rows with the same score metric in the "
                       "'parameterization' study", [])  # fmt: skip
    parts, evidence = {}, []
    for metric, rows in groups.items():
        verdict, reason, lines = _decay_range_group(data, metric, rows)
        parts[metric] = (verdict, reason)
        evidence += lines
    return _combine(1, claim, parts, evidence)


def _decay_range_group(data: SweepData, metric: str, rows: list[Row]) -> tuple[str, str, list[str]]:
    scale, digits = scale_of(metric), DIGITS.get(metric, 2)
    gain = {r.label: float(np.mean([scale.gain(v) for v in r.stat(metric).values])) for r in rows}
    decay = {r.label: decay_medians(r, data.decay_stats).mean for r in rows}
    with_decay = sorted((r for r in rows if decay[r.label] is not None), key=lambda r: decay[r.label])
    best = max(rows, key=lambda r: gain[r.label])
    worst = min(rows, key=lambda r: gain[r.label])
    spread = score_pair(best, worst)[1]
    spread_est = spread.estimate
    corr = spearman([decay[r.label] for r in with_decay], [gain[r.label] for r in with_decay])
    memory = [_memory_decades(decay[r.label]) for r in with_decay]
    span = max(memory) - min(memory) if memory else 0.0

    lines = []
    if corr:
        ci = "" if corr.low is None else f" [{corr.low:+.2f}, {corr.high:+.2f}]"
        how = "all orderings" if corr.exact else f"{PERMUTATIONS:,} random orderings"
        lines.append(f"{metric}: Spearman ρ(median decay, score) = {corr.rho:+.2f}{ci} over {corr.n} rows, "
                     f"p = {corr.p:.3g} (permutation, {how}); positive: a larger decay scores better")  # fmt: skip
    lines.append(f"{metric} by median decay (all layers): " + "; ".join(
        f"{r.label} {decay[r.label]:.3f} → {r.stat(metric).mean:.{digits}f}" for r in with_decay))  # fmt: skip
    near_best = [r for r in with_decay if r is best or not _significantly_better(best, r)]
    if decay[best.label] is not None:
        lo, hi = min(decay[r.label] for r in near_best), max(decay[r.label] for r in near_best)
        names = ", ".join(r.label for r in near_best)
        lines.append(f"best: {best.label} (median decay {decay[best.label]:.3f}); rows not significantly worse "
                     f"(paired): {names}, median decay {lo:.3f}–{hi:.3f}")  # fmt: skip
    lines.append(f"best vs worst: {pair_line(spread, scale)} ({metric}, {scale.name})")

    spread_why = (_why(spread_est, scale, [spread], "best vs worst") if spread_est
                  else "best vs worst have no common finished seed")  # fmt: skip
    if spread_est and spread_est.above(-scale.margin) and spread_est.below(scale.margin) and span >= MIN_DECADES:
        margin = scale.fmt(scale.margin, False)
        return "contradicted", f"rows whose memory lengths span {span:.1f} decades all score within {margin}: " + (
            spread_why), lines  # fmt: skip
    if corr and corr.p < ALPHA:
        trend = "rises" if corr.rho > 0 else "falls"
        return "supported", (f"the score {trend} with the learned median decay: Spearman ρ = {corr.rho:+.2f}, "
                             f"p = {corr.p:.3g} < {ALPHA:g} over {corr.n} rows"), lines  # fmt: skip
    if corr is None:
        why = "the rows' median decays or scores do not vary" if len(with_decay) >= 2 else "no decay statistics"
    else:
        why = f"Spearman ρ = {corr.rho:+.2f}, p = {corr.p:.3g} over {corr.n} rows is not significant"
        why += " (5 rows are the fewest that can reach α = 0.05)" if corr.n < 5 else ""
    margin = scale.fmt(scale.margin, False)
    if span < MIN_DECADES:
        tail = f"the rows' memory lengths span only {span:.1f} decades"
    elif spread_est and (spread_est.above(scale.margin) or spread_est.below(-scale.margin)):
        tail = f"the rows do differ by more than {margin}: {spread_why}"
    else:
        tail = f"{spread_why} does not rule out a difference of {margin}"
    return "inconclusive", f"{why}, and {tail}", lines


def _significantly_better(a: Row, b: Row) -> bool:
    est = score_pair(a, b)[1].estimate
    return est is not None and est.above(0)


def toward_extreme(shared: Row, unshared: Row, data: SweepData) -> Paired:
    """Seed-paired log10 dist(unshared) - log10 dist(shared), dist = distance of the median decay to 0 or 1."""
    def decades(row: Row) -> dict[int, float]:
        return {s: _decades_to_extreme(v) for s, v in decay_medians(row, data.decay_stats).by_seed().items()}

    return paired(unshared.label, decades(unshared), shared.label, decades(shared), lambda v: v)


def finding_sharing(data: SweepData) -> Verdict:
    claim = "Sharing the decay with the key can push decay values too far and hurt."
    key = "model.decay.share"
    groups = _grouped(data, key, lambda v: v is True, lambda v: v is False)
    if not groups:
        return Verdict(2, claim, "no data", f"no pair of rows differs only in {key}", [])
    parts, evidence = {}, []
    for metric, triples in groups.items():
        scale = scale_of(metric)
        pairs = [p for _, _, p in triples]
        moved = [toward_extreme(a, b, data) for a, b, _ in triples]
        for (a, b, p), m in zip(triples, moved):
            da, db = decay_medians(a, data.decay_stats).mean, decay_medians(b, data.decay_stats).mean
            decays = f"median decay {da:.3f} vs {db:.3f}" if da is not None and db is not None else "no decay stats"
            toward = f", toward 0 or 1 by {m.estimate.fmt(DECADES)}" if m.diffs else ""
            evidence.append(f"{pair_line(p, scale)}; {decays}{toward}")
        score, mech = population(pairs), population(moved)
        if score is None:
            parts[metric] = ("inconclusive", "no pair has a common finished seed")
            continue
        evidence.append(population_line(pairs, score, scale, metric, "shared", "unshared"))
        if mech:
            evidence.append(f"population (median decay, {DECADES.name}): mean {mech.fmt(DECADES)}")
        hurt = _why(score, scale, pairs, "shared vs unshared")
        shift = "no decay statistics" if mech is None else _why(mech, DECADES, moved, "median decay toward 0 or 1 by")
        if score.below(0) and mech is not None and mech.above(0):
            parts[metric] = ("supported", f"shared scores worse, {hurt}, and its {shift}")
        elif score.above(-scale.margin):
            parts[metric] = ("contradicted", f"a harm of {scale.fmt(scale.margin, False)} or more is excluded: {hurt}")
        elif mech is not None and mech.below(0):
            parts[metric] = ("contradicted", f"the shared decay moved away from 0 and 1: {shift}")
        else:
            parts[metric] = ("inconclusive", f"{hurt}; {shift}; both must be significant")
    return _combine(2, claim, parts, evidence)


def _paired_finding(
    number: int, claim: str, groups: dict[str, list[tuple[Row, Row, Paired]]], names: tuple[str, str],
    decide: Callable[[Estimate, Scale, str], tuple[str, str]],
) -> Verdict:
    """Per score metric: every pair's line, the population estimate over pairs, and ``decide``'s verdict on it."""
    parts, evidence = {}, []
    for metric, triples in groups.items():
        scale = scale_of(metric)
        pairs = [p for _, _, p in triples]
        evidence += [pair_line(p, scale) for p in pairs]
        est = population(pairs)
        if est is None:
            parts[metric] = ("inconclusive", "no pair has a common finished seed")
            continue
        evidence.append(population_line(pairs, est, scale, metric, *names))
        parts[metric] = decide(est, scale, _why(est, scale, pairs, f"{names[0]} vs {names[1]}"))
    return _combine(number, claim, parts, evidence)


def finding_granularity(data: SweepData) -> Verdict:
    claim = "Vector decay usually beats scalar decay under the same parameterization."
    key = "model.decay.granularity"
    groups = _grouped(data, key, lambda v: v == "vector", lambda v: v == "scalar")
    if not groups:
        return Verdict(3, claim, "no data", f"no pair of rows differs only in {key}", [])

    def decide(est: Estimate, scale: Scale, why: str) -> tuple[str, str]:
        margin = scale.fmt(scale.margin, False)
        if est.above(0):
            return "supported", f"vector is significantly better on average: {why}"
        if est.below(scale.margin):
            return "contradicted", f"a vector benefit of {margin} or more is excluded: {why}"
        return "inconclusive", f"{why} neither excludes 0 nor a benefit of {margin}"

    return _paired_finding(3, claim, groups, ("vector", "scalar"), decide)


def _pos_finding(data: SweepData, pos: str, claim: str) -> Verdict:
    key = "model.pos"
    groups = _grouped(data, key, lambda v: v == pos, lambda v: v == "none")
    if not groups:
        return Verdict(4, claim, "no data", f"no pair of linear rows differs only in {key} = {pos} vs none", [])
    name = pos.upper() if pos != "rope" else "RoPE"

    def decide(est: Estimate, scale: Scale, why: str) -> tuple[str, str]:
        margin = scale.fmt(scale.margin, False)
        if est.below(scale.margin):
            return "supported", f"a benefit of {margin} or more is excluded: {why}"
        if est.above(0) and est.mean >= scale.margin:
            return "contradicted", f"{name} helps significantly, by an estimated {margin} or more: {why}"
        return "inconclusive", f"{why} does not exclude a benefit of {margin}"

    return _paired_finding(4, claim, groups, (name, "none"), decide)


def finding_rope(data: SweepData) -> Verdict:
    verdict = _pos_finding(data, "rope", "RoPE rarely gives decay linear attention a tangible benefit.")
    verdict.beyond = [
        _pos_finding(data, pos, f"Beyond the paper: {pos.upper()} rarely gives decay linear attention a tangible "
                     "benefit (same rule).")  # fmt: skip
        for pos in ("lrpe", "tpe")
    ]
    return verdict


def all_findings(data: SweepData) -> list[Verdict]:
    return [finding_decay_range(data), finding_sharing(data), finding_granularity(data), finding_rope(data)]
