"""Verdict rules on synthetic rows: the 2-sigma rule, undecided single seeds, and each finding's decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from decaylab.report.data import Row, Stat, SweepData, sorted_rows
from decaylab.report.findings import all_findings, compare, pairs_differing_in

BASE = {"model.mixer": "linear", "model.pos": "none", "model.decay.kind": "simple", "model.decay.p": 0.99,
        "model.decay.granularity": "vector", "model.decay.share": False}  # fmt: skip


def row(label, ppl, study="s", index=0, **config):
    cfg = {**BASE, **{k.replace("__", "."): v for k, v in config.items()}}
    return Row(study, label, index, [f"{label}-{i}" for i in range(len(ppl))], ["finished"] * len(ppl), cfg,
               {"test_ppl": Stat(tuple(ppl))}, [])  # fmt: skip


def sweep(**studies) -> SweepData:
    rows = {name: rs for name, rs in studies.items()}
    decay = {r.run_ids[0]: {0: {"median": 0.5}} for rs in rows.values() for r in rs}
    return SweepData(Path("."), "t", "", {}, [(n, n) for n in rows], rows, {}, decay, {})


def verdicts(data):
    return {v.number: v.verdict for v in all_findings(data)}


def test_compare_applies_the_two_sigma_rule():
    a, b = row("a", [100.0, 102.0]), row("b", [110.0, 112.0])  # std 1.41 each: margin 2.83, diff 10
    c = compare(a, b)
    assert c.outcome == "a better" and c.diff == pytest.approx(10.0) and c.margin == pytest.approx(2 * 2**0.5)
    assert compare(a, row("b", [101.0, 104.0])).outcome == "tie"
    assert compare(a, row("b", [150.0])).outcome == "undecided"  # one seed: noise unknown
    acc_hi, acc_lo = row("x", []), row("y", [])
    acc_hi.metrics = {"mqar_accuracy": Stat((0.9, 0.91))}
    acc_lo.metrics = {"mqar_accuracy": Stat((0.5, 0.52))}
    assert compare(acc_hi, acc_lo).outcome == "a better"  # higher accuracy is better
    assert compare(acc_hi, a) is None  # no common metric


def test_pairs_and_sorting():
    rows = [row("v", [1.0]), row("s", [2.0], model__decay__granularity="scalar"),
            row("sr", [3.0], model__decay__granularity="scalar", model__pos="rope")]  # fmt: skip
    assert [(a.label, b.label) for a, b in pairs_differing_in(rows, "model.decay.granularity")] == [("v", "s")]
    assert [(a.label, b.label) for a, b in pairs_differing_in(rows, "model.pos")] == [("s", "sr")]
    failed = row("f", [])
    assert [r.label for r in sorted_rows([rows[2], failed, rows[0]])] == ["v", "sr", "f"]


def test_decay_range_finding():
    far = [row("SD-0.8", [150.0, 151.0], model__decay__p=0.8), row("SD-0.99", [100.0, 101.0])]
    near = [row("SD-0.8", [100.5, 101.5], model__decay__p=0.8), row("SD-0.99", [100.0, 101.0])]
    one_seed = [row("SD-0.8", [150.0], model__decay__p=0.8), row("SD-0.99", [100.0])]
    assert verdicts(sweep(parameterization=far))[1] == "supported"
    assert verdicts(sweep(parameterization=near))[1] == "not supported"
    assert verdicts(sweep(parameterization=one_seed))[1] == "inconclusive"
    assert verdicts(sweep(other=far))[1] == "no data"


def test_sharing_finding():
    hurt = [row("GLA", [100.0, 101.0]), row("GLA-Share", [130.0, 131.0], model__decay__share=True)]
    same = [row("GLA", [100.0, 101.0]), row("GLA-Share", [100.5, 101.0], model__decay__share=True)]
    assert verdicts(sweep(sharing=hurt))[2] == "supported"
    assert verdicts(sweep(sharing=same))[2] == "not supported"
    evidence = next(v for v in all_findings(sweep(sharing=hurt)) if v.number == 2).evidence
    assert "median decay 0.50 (shared)" in evidence[0]


def test_granularity_finding_needs_a_majority():
    def pair(kind, vec, sca):
        return [row(f"{kind} v", vec, model__decay__kind=kind),
                row(f"{kind} s", sca, model__decay__kind=kind, model__decay__granularity="scalar")]  # fmt: skip

    wins = pair("gla", [100.0, 101.0], [120.0, 121.0]) + pair("hgrn2", [100.0, 101.0], [130.0, 131.0])
    split = pair("gla", [100.0, 101.0], [120.0, 121.0]) + pair("hgrn2", [130.0, 131.0], [100.0, 101.0])
    undecided = pair("gla", [100.0], [120.0]) + pair("hgrn2", [100.0], [130.0])
    assert verdicts(sweep(granularity=wins))[3] == "supported"
    assert verdicts(sweep(granularity=split))[3] == "not supported"  # 1 of 2 is not a majority
    assert verdicts(sweep(granularity=undecided))[3] == "inconclusive"


def test_rope_finding_ignores_softmax():
    none = row("SD none", [100.0, 101.0], model__decay__granularity="scalar")
    rope_tie = row("SD rope", [100.2, 101.0], model__decay__granularity="scalar", model__pos="rope")
    rope_win = row("SD rope", [80.0, 81.0], model__decay__granularity="scalar", model__pos="rope")
    soft = [row("Softmax none", [200.0, 201.0], model__mixer="softmax"),
            row("Softmax rope", [90.0, 91.0], model__mixer="softmax", model__pos="rope")]  # fmt: skip
    assert verdicts(sweep(pos=[none, rope_tie] + soft))[4] == "supported"
    assert verdicts(sweep(pos=[none, rope_win] + soft))[4] == "not supported"
    assert verdicts(sweep(pos=soft))[4] == "no data"


def recall_row(label, acc, val_ppl, **config):
    r = row(label, val_ppl, **config)  # one run id per seed
    r.metrics = {"mqar_accuracy": Stat(tuple(acc)), "val_ppl": Stat(tuple(val_ppl))}
    return r


def test_recall_rows_are_scored_by_accuracy_not_by_their_validation_loss():
    # A recall run logs a validation loss too; the row must be ranked by accuracy, higher first.
    good = recall_row("SD-0.99", [0.12, 0.13], [14.0, 13.0])
    bad = recall_row("Mamba2 w/o Δ", [0.05, 0.04], [9.0, 10.0], model__decay__kind="mamba2_no_dt")
    assert good.score[0] == "mqar_accuracy" and good.score[1] is True
    assert [r.label for r in sorted_rows([bad, good])] == ["SD-0.99", "Mamba2 w/o Δ"]
    (finding,) = [v for v in all_findings(sweep(parameterization=[bad, good])) if v.number == 1]
    assert finding.verdict == "supported"
    assert finding.evidence[0].startswith("SD-0.99 0.125 ± 0.007 vs Mamba2 w/o Δ 0.045 ± 0.007 (mqar_accuracy)")
    tied = recall_row("SD-0.8", [0.125, 0.12], [15.0, 14.0], model__decay__p=0.8)
    assert verdicts(sweep(parameterization=[tied, good]))[1] == "not supported"


def test_decay_range_never_ranks_perplexity_against_accuracy():
    lm_tie = [row("LM SD-0.8", [100.5, 101.5], model__decay__p=0.8), row("LM SD-0.99", [100.0, 101.0])]
    forgetful = recall_row("Mamba2 w/o Δ", [0.05, 0.04], [9.0, 10.0], model__decay__kind="mamba2_no_dt")
    recall_far = [recall_row("SD-0.99", [0.12, 0.13], [14.0, 13.0]), forgetful]
    (finding,) = [v for v in all_findings(sweep(parameterization=lm_tie + recall_far)) if v.number == 1]
    assert finding.verdict == "supported"  # the recall rows differ; the LM rows tie
    assert "test_ppl" in finding.reason and "mqar_accuracy" in finding.reason
    metrics = {line.split("(")[-1].split(")")[0] for line in finding.evidence if not line.startswith("median")}
    assert metrics == {"test_ppl", "mqar_accuracy"}
    both_tie = lm_tie + [recall_row("a", [0.12, 0.13], [1.0, 1.0]), recall_row("b", [0.125, 0.12], [1.0, 1.0],
                                                                              model__decay__p=0.8)]  # fmt: skip
    assert verdicts(sweep(parameterization=both_tie))[1] == "not supported"
    one_metric_each = [row("LM", [100.0, 101.0]), recall_row("R", [0.1, 0.2], [1.0, 1.0], model__decay__p=0.8)]
    assert verdicts(sweep(parameterization=one_metric_each))[1] == "no data"
