"""Verdicts on synthetic result sets whose right answer is known: strong effect, no effect, mixed, one seed, the
9-wins/0-losses/15-ties granularity case, sharing with and without the decay moving, RoPE/LRPE/TPE, MQAR rows."""

from __future__ import annotations

import math

import pytest

from synthetic import ppl, noise, row, sweep

from decaylab.report.data import Stat, sorted_rows
from decaylab.report.findings import all_findings, pairs_differing_in, score_pair


def findings(data):
    return {v.number: v for v in all_findings(data)}


def verdicts(data):
    return {n: v.verdict for n, v in findings(data).items()}


def gran_pair(i, gain, sigma=0.01, seeds=3, base=100.0, metric="test_ppl"):
    kind = f"kind{i}"
    scalar = ppl(base * (1 + i), 0.0, seeds=seeds)  # pairs at very different perplexity levels
    vector = [s * math.exp(-(gain + sigma * noise(j, i))) for j, s in enumerate(scalar)]
    return [row(f"{kind} vector", vector, model__decay__kind=kind, metric=metric),
            row(f"{kind} scalar", scalar, model__decay__kind=kind, model__decay__granularity="scalar",
                metric=metric)]  # fmt: skip


def test_pairs_sorting_and_paired_scores():
    rows = [row("v", [1.0]), row("s", [2.0], model__decay__granularity="scalar"),
            row("sr", [3.0], model__decay__granularity="scalar", model__pos="rope")]  # fmt: skip
    assert [(a.label, b.label) for a, b in pairs_differing_in(rows, "model.decay.granularity")] == [("v", "s")]
    assert [(a.label, b.label) for a, b in pairs_differing_in(rows, "model.pos")] == [("s", "sr")]
    failed = row("f", [])
    assert [r.label for r in sorted_rows([rows[2], failed, rows[0]])] == ["v", "sr", "f"]
    metric, p = score_pair(rows[0], rows[1])
    assert metric == "test_ppl" and p.diffs == pytest.approx((math.log(2.0),))  # v has half the perplexity
    acc_hi, acc_lo = row("x", [0.9, 0.91], metric="mqar_accuracy"), row("y", [0.5, 0.52], metric="mqar_accuracy")
    assert score_pair(acc_hi, acc_lo)[1].estimate.above(0)  # higher accuracy is better
    assert score_pair(acc_hi, rows[0]) is None  # no common metric


def test_granularity_nine_wins_zero_losses_fifteen_ties_is_supported():
    # The paper-preset case that a majority-of-significant-pairs rule called "not supported": 9 pairs where vector
    # wins beyond seed noise, 11 where it leads within noise, 4 where scalar leads within noise, none for scalar.
    gains = [0.05] * 9 + [0.01] * 11 + [-0.005] * 4
    rows = [r for i, g in enumerate(gains) for r in gran_pair(i, g)]
    v = findings(sweep(granularity=rows))[3]
    assert v.verdict == "supported"
    (pop,) = [e for e in v.evidence if e.startswith("population")]
    assert "vector ahead in 20/24 pairs, significantly in 9; scalar significantly in 0; 15 without" in pop
    assert "24 pairs, 3 seeds" in v.reason and "95% CI [+1." in v.reason


def test_granularity_strong_none_mixed_and_one_seed():
    strong = [r for i in range(4) for r in gran_pair(i, 0.05)]
    assert verdicts(sweep(granularity=strong))[3] == "supported"
    flat = [r for i in range(8) for r in gran_pair(i, 0.0, sigma=0.002, seeds=5)]
    v = findings(sweep(granularity=flat))[3]
    assert v.verdict == "contradicted" and "benefit of 1.0% or more is excluded" in v.reason
    mixed = [r for i, g in enumerate([0.05, -0.05, 0.05, -0.05]) for r in gran_pair(i, g)]
    assert verdicts(sweep(granularity=mixed))[3] == "inconclusive"  # tight pairs, but they disagree
    scalar_wins = [r for i in range(4) for r in gran_pair(i, -0.05)]
    assert verdicts(sweep(granularity=scalar_wins))[3] == "contradicted"
    one = gran_pair(0, 0.3, seeds=1)
    v = findings(sweep(granularity=one))[3]
    assert v.verdict == "inconclusive" and "no CI" in v.reason  # one pair, one seed: noise unknown
    # one seed per pair, but twelve pairs: the spread between pairs carries the seed noise
    many = [r for i in range(12) for r in gran_pair(i, 0.05 + 0.01 * (i % 3), seeds=1)]
    assert verdicts(sweep(granularity=many))[3] == "supported"


def test_granularity_on_recall_rows_uses_accuracy_higher_is_better():
    def acc_pair(i, vec, sca):
        return [row(f"k{i} v", vec, model__decay__kind=f"k{i}", metric="mqar_accuracy"),
                row(f"k{i} s", sca, model__decay__kind=f"k{i}", model__decay__granularity="scalar",
                    metric="mqar_accuracy")]  # fmt: skip

    better = acc_pair(0, [0.50, 0.52, 0.51], [0.30, 0.31, 0.29]) + acc_pair(1, [0.4, 0.42, 0.41], [0.2, 0.2, 0.21])
    v = findings(sweep(granularity=better))[3]
    assert v.verdict == "supported" and "pts" in v.reason and "mqar_accuracy" in v.evidence[-1]
    worse = acc_pair(0, [0.30, 0.31, 0.29], [0.50, 0.52, 0.51]) + acc_pair(1, [0.2, 0.2, 0.21], [0.4, 0.42, 0.41])
    assert verdicts(sweep(granularity=worse))[3] == "contradicted"


def share_pair(i, harm, unshared_decay, shared_decay, sigma=0.005):
    kind = ("gla", "hgrn2", "simple", "mamba2")[i]
    unshared = ppl(100.0, 0.0)
    shared = [u * math.exp(harm + sigma * noise(s, i)) for s, u in enumerate(unshared)]
    jitter = (-1e-4, 0.0, 1e-4)
    return [row(kind, unshared, decay=[unshared_decay + j for j in jitter], model__decay__kind=kind),
            row(f"{kind}-Share", shared, decay=[shared_decay + j for j in jitter], model__decay__kind=kind,
                model__decay__share=True)]  # fmt: skip


def test_sharing_needs_both_the_harm_and_the_decay_moving_to_an_extreme():
    kinds = range(3)
    moved = [r for k in kinds for r in share_pair(k, 0.05, 0.95, 0.999)]
    v = findings(sweep(sharing=moved))[2]
    assert v.verdict == "supported" and "toward 0 or 1 by +1.7" in v.reason
    assert "gla-Share vs gla" in v.evidence[0] and "median decay 0.999 vs 0.950" in v.evidence[0]
    still = [r for k in kinds for r in share_pair(k, 0.05, 0.95, 0.95)]
    v = findings(sweep(sharing=still))[2]
    assert v.verdict == "inconclusive" and "both must be significant" in v.reason  # worse, but the decay stayed
    same = [r for k in kinds for r in share_pair(k, 0.0, 0.95, 0.999, sigma=0.001)]
    v = findings(sweep(sharing=same))[2]
    assert v.verdict == "contradicted" and "harm of 1.0% or more is excluded" in v.reason
    away = [r for k in kinds for r in share_pair(k, 0.05, 0.999, 0.9)]
    v = findings(sweep(sharing=away))[2]
    assert v.verdict == "contradicted" and "moved away from 0 and 1" in v.reason
    one_seed = [row("GLA", [100.0]), row("GLA-Share", [130.0], model__decay__share=True)]
    assert verdicts(sweep(sharing=one_seed))[2] == "inconclusive"
    assert verdicts(sweep(other=moved[:1]))[2] == "no data"


def pos_rows(i, pos_gains):
    """A scalar model without positional encoding and with each of pos_gains: {pos: (gain, seed sigma)}."""
    kind = "abcd"[i]
    none = ppl(100.0, 0.0)
    out = [row(f"{kind} none", none, model__decay__kind=kind, model__decay__granularity="scalar")]
    for pos, (gain, s) in pos_gains.items():
        gain = gain[i] if isinstance(gain, tuple) else gain  # a tuple: one gain per pair
        values = [n * math.exp(-(gain + s * noise(j, i))) for j, n in enumerate(none)]
        out.append(row(f"{kind} {pos}", values, model__decay__kind=kind, model__decay__granularity="scalar",
                       model__pos=pos))  # fmt: skip
    return out


def test_rope_finding_with_lrpe_and_tpe_beyond_the_paper():
    # RoPE: a tie; LRPE: a large, consistent win; TPE: pairs that disagree (+10%, -6%, +2%)
    gains = {"rope": (0.001, 0.002), "lrpe": (0.10, 0.005), "tpe": ((0.10, -0.06, 0.02), 0.02)}
    rows = [r for i in range(3) for r in pos_rows(i, gains)]
    soft = [row("Softmax none", [200.0, 201.0], model__mixer="softmax"),
            row("Softmax rope", [90.0, 91.0], model__mixer="softmax", model__pos="rope")]  # fmt: skip
    v = findings(sweep(pos=rows + soft))[4]
    assert v.verdict == "supported" and "benefit of 1.0% or more is excluded" in v.reason
    assert len([e for e in v.evidence if e.startswith(("a ", "b ", "c "))]) == 3  # softmax pair left out
    lrpe, tpe = v.beyond
    assert "LRPE" in lrpe.claim and "Beyond the paper" in lrpe.claim and lrpe.verdict == "contradicted"
    assert "TPE" in tpe.claim and tpe.verdict == "inconclusive"
    assert all(b.evidence[-1].startswith("population") for b in v.beyond)
    assert verdicts(sweep(pos=soft))[4] == "no data"
    only_tpe = [r for i in range(2) for r in pos_rows(i, {"tpe": (0.2, 0.01)})]
    v = findings(sweep(pos=only_tpe))[4]
    assert v.verdict == "no data" and v.beyond[1].verdict == "contradicted" and v.beyond[0].verdict == "no data"


DECAYS = [0.001, 0.5, 0.8, 0.9, 0.95, 0.99]


def param_rows(scores_by_decay, seeds=3, sigma=0.005, metric="test_ppl"):
    rows = []
    for i, (decay, score) in enumerate(scores_by_decay):
        values = ([score * math.exp(sigma * noise(s, i)) for s in range(seeds)] if metric == "test_ppl"
                  else [score + sigma * noise(s, i) for s in range(seeds)])  # fmt: skip
        rows.append(row(f"r{i}", values, decay=[decay] * seeds, metric=metric, model__decay__p=decay))
    return rows


def test_decay_range_relation_strong_none_too_few_rows_and_one_seed():
    strong = param_rows(zip(DECAYS, [300, 200, 150, 130, 120, 110]))
    v = findings(sweep(parameterization=strong))[1]
    assert v.verdict == "supported" and "rises with the learned median decay" in v.reason and "p = 0.00278" in v.reason
    assert any(e.startswith("best vs worst: r5 vs r0: +63.3% [") for e in v.evidence)
    assert any(e.startswith("best: r5 (median decay 0.990)") for e in v.evidence)
    flat = param_rows(zip([0.9, 0.95, 0.99, 0.995, 0.999], [100.0] * 5), sigma=0.001)
    v = findings(sweep(parameterization=flat))[1]
    assert v.verdict == "contradicted" and "span 2.0 decades all score within 1.0%" in v.reason
    narrow = param_rows(zip([0.99, 0.992, 0.995], [100.0] * 3), sigma=0.001)
    v = findings(sweep(parameterization=narrow))[1]
    assert v.verdict == "inconclusive" and "span only 0.3 decades" in v.reason  # equal scores, but similar decays
    few = param_rows(zip([0.001, 0.8, 0.99], [300, 150, 110]))
    v = findings(sweep(parameterization=few))[1]
    assert v.verdict == "inconclusive" and "5 rows are the fewest" in v.reason
    assert "the rows do differ by more than 1.0%: best vs worst +63.3%" in v.reason  # 1 - 110/300
    one_seed = param_rows(zip(DECAYS, [300, 200, 150, 130, 120, 110]), seeds=1)
    assert verdicts(sweep(parameterization=one_seed))[1] == "supported"  # rows, not seeds, are the units
    assert verdicts(sweep(other=strong))[1] == "no data"


def test_decay_range_on_accuracy_and_never_across_metrics():
    recall = param_rows(zip(DECAYS, [0.03, 0.05, 0.08, 0.10, 0.12, 0.125]), metric="mqar_accuracy", sigma=0.002)
    v = findings(sweep(parameterization=recall))[1]
    assert v.verdict == "supported" and v.evidence[0].startswith("mqar_accuracy: Spearman ρ(median decay, score) = +1")
    lm_flat = param_rows(zip([0.9, 0.95, 0.99, 0.995, 0.999], [100.0] * 5), sigma=0.001)
    both = lm_flat + recall
    for i, r in enumerate(both):
        r.config["model.decay.kind"] = f"k{i}"  # distinct configurations
    v = findings(sweep(parameterization=both))[1]
    assert v.verdict == "inconclusive"  # accuracy supports, perplexity contradicts: the metrics disagree
    assert v.reason.startswith("test_ppl: rows whose") and "; mqar_accuracy: the score rises" in v.reason
    metrics = {e.split(":")[0] for e in v.evidence if "Spearman" in e}
    assert metrics == {"test_ppl", "mqar_accuracy"}
    one_metric_each = [row("LM", [100.0, 101.0]), row("R", [0.1, 0.2], metric="mqar_accuracy")]
    assert verdicts(sweep(parameterization=one_metric_each))[1] == "no data"


def test_recall_rows_are_scored_by_accuracy_not_by_their_validation_loss():
    # A recall run logs a validation loss too; the row must be ranked by accuracy, higher first.
    good = row("SD-0.99", [0.12, 0.13], metric="mqar_accuracy")
    good.metrics["val_ppl"] = Stat((14.0, 13.0))
    bad = row("Mamba2 w/o Δ", [0.05, 0.04], metric="mqar_accuracy", model__decay__kind="mamba2_no_dt")
    bad.metrics["val_ppl"] = Stat((9.0, 10.0))
    assert good.score[0] == "mqar_accuracy" and good.score[1] is True
    assert [r.label for r in sorted_rows([bad, good])] == ["SD-0.99", "Mamba2 w/o Δ"]
    v = findings(sweep(parameterization=[bad, good]))[1]
    expected = "best vs worst: SD-0.99 vs Mamba2 w/o Δ: +8.0 pts [-4.7, +20.7] (2 seeds)"
    assert any(e.startswith(expected) for e in v.evidence)
