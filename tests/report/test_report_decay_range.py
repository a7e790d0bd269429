"""The decay-range section (decaylab.report.decay_range) on synthetic settings whose answer is known: which studies
form settings, the best decay and its interval, the two questions' verdicts (supported, contradicted,
inconclusive), the figures and the report text."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic import ppl, row, sweep

from decaylab.report.decay_range import (
    analyse,
    best_decay,
    half_life,
    question_context,
    question_recall,
    range_settings,
)
from decaylab.report.range_plots import range_figures
from decaylab.report.render import RANGE_METHOD, _html, _markdown

DECAYS = {"SD-0.5": 0.5, "SD-0.8": 0.8, "SD-0.95": 0.95, "SD-0.99": 0.99}


def lm_study(name, seq_len, gains, sigma=0.002, seeds=3):
    """Rows of one context: each design's ln-ppl gain over ppl 100 and its learned median decay (a hair of seed
    spread, so the winner's half-life has an interval)."""
    rows = []
    for i, (label, gain) in enumerate(gains.items()):
        r = row(label, ppl(100.0, gain, sigma, seeds, shift=i), study=name,
                decay=[DECAYS[label] * (1 - 1e-4 * s) for s in range(seeds)], train__seq_len=seq_len,
                model__decay__p=DECAYS[label])  # fmt: skip
        r.run_ids = [f"{name}-{rid}" for rid in r.run_ids]  # one run per study: the decay statistics stay apart
        rows.append(r)
    return rows


def recall_study(name, seq_len, kv, accuracies, sigma=0.005, seeds=3):
    rows = []
    for i, (label, acc) in enumerate(accuracies.items()):
        scores = [acc + sigma * ((s + i) % 3 - 1) for s in range(seeds)]
        r = row(label, scores, study=name, metric="mqar_accuracy", decay=[DECAYS[label]] * seeds,
                train__seq_len=seq_len, data__mqar_num_kv_pairs=kv, model__decay__p=DECAYS[label])  # fmt: skip
        r.run_ids = [f"{name}-{rid}" for rid in r.run_ids]
        rows.append(r)
    return rows


SHORT_BEST = {"SD-0.5": 0.00, "SD-0.8": 0.10, "SD-0.95": 0.05, "SD-0.99": 0.0}
LONG_BEST = {"SD-0.5": 0.00, "SD-0.8": 0.02, "SD-0.95": 0.05, "SD-0.99": 0.12}


def test_half_life_in_tokens():
    assert half_life(0.5) == pytest.approx(1.0)
    assert half_life(0.99) == pytest.approx(math.log(0.5) / math.log(0.99))
    assert half_life(1.0) is None and half_life(0.0) is None and half_life(None) is None


def test_only_studies_that_differ_in_context_or_difficulty_form_settings():
    data = sweep(**{"lm-128": lm_study("lm-128", 128, SHORT_BEST), "lm-2048": lm_study("lm-2048", 2048, LONG_BEST)})
    lm, recall = range_settings(data)
    assert [s.seq_len for s in lm] == [128, 2048] and recall == []
    same = sweep(a=lm_study("a", 128, SHORT_BEST), b=lm_study("b", 128, LONG_BEST))  # the paper's tables: one context
    assert range_settings(same) == ([], [])
    assert analyse(same) is None


def test_the_best_decay_and_its_interval():
    setting = range_settings(sweep(**{"lm-128": lm_study("lm-128", 128, SHORT_BEST),
                                      "lm-512": lm_study("lm-512", 512, SHORT_BEST)}))[0][0]  # fmt: skip
    best = best_decay(setting, np.random.default_rng(0))
    assert best.design.label == "SD-0.8" and best.winners["SD-0.8"] > 0.99
    assert best.half_life == pytest.approx(half_life(0.8 * (1 - 1e-4)), rel=1e-3)
    low, high = best.interval()
    assert low <= best.half_life <= high and high / low < 1.01


def test_a_best_decay_that_moves_longer_is_supported():
    data = sweep(**{"lm-128": lm_study("lm-128", 128, SHORT_BEST), "lm-2048": lm_study("lm-2048", 2048, LONG_BEST)})
    verdict, bests = question_context(range_settings(data)[0], np.random.default_rng(0))
    assert verdict.verdict == "supported" and "moves longer" in verdict.reason
    assert [b.design.label for b in bests] == ["SD-0.8", "SD-0.99"]
    assert any("context 2048: best SD-0.99" in line for line in verdict.evidence)


def test_a_best_decay_that_stays_is_contradicted():
    data = sweep(**{"lm-128": lm_study("lm-128", 128, SHORT_BEST), "lm-2048": lm_study("lm-2048", 2048, SHORT_BEST)})
    verdict, _ = question_context(range_settings(data)[0], np.random.default_rng(0))
    assert verdict.verdict == "contradicted" and "within a factor of 2" in verdict.reason


def test_designs_within_seed_noise_leave_it_open():
    flat = {"SD-0.5": 0.0, "SD-0.8": 0.003, "SD-0.95": 0.001, "SD-0.99": 0.002}
    data = sweep(**{"lm-128": lm_study("lm-128", 128, flat, sigma=0.02),
                    "lm-2048": lm_study("lm-2048", 2048, flat, sigma=0.02)})  # fmt: skip
    verdict, bests = question_context(range_settings(data)[0], np.random.default_rng(0))
    assert verdict.verdict == "inconclusive"
    assert len(bests[0].winners) > 1  # the bootstrap spreads the win over several designs


def _with_recall(recall_acc, lm_gains=LONG_BEST, sigma=0.005):
    studies = {"lm-128": lm_study("lm-128", 128, SHORT_BEST), "lm-2048": lm_study("lm-2048", 2048, lm_gains),
               "mqar-a": recall_study("mqar-a", 128, 8, recall_acc, sigma),
               "mqar-b": recall_study("mqar-b", 256, 16, recall_acc, sigma)}  # fmt: skip
    return range_settings(sweep(**studies))


def test_a_design_that_recalls_much_better_contradicts_the_perplexity_best():
    lm, recall = _with_recall({"SD-0.5": 0.95, "SD-0.8": 0.5, "SD-0.95": 0.6, "SD-0.99": 0.3})
    verdict = question_recall(lm, recall)
    assert verdict.verdict == "contradicted" and "SD-0.5 at T=128, 8 pairs" in verdict.reason
    assert verdict.evidence[0] == "perplexity-best design at context 2048: SD-0.99"


def test_the_perplexity_best_recalling_best_by_far_supports_it():
    lm, recall = _with_recall({"SD-0.5": 0.2, "SD-0.8": 0.4, "SD-0.95": 0.5, "SD-0.99": 0.9}, sigma=0.002)
    assert question_recall(lm, recall).verdict == "supported"


def test_recall_within_noise_of_the_perplexity_best_is_inconclusive():
    lm, recall = _with_recall({"SD-0.5": 0.5, "SD-0.8": 0.5, "SD-0.95": 0.5, "SD-0.99": 0.5}, sigma=0.05)
    assert question_recall(lm, recall).verdict == "inconclusive"


def test_recall_at_chance_everywhere_cannot_name_a_best_design():
    lm, recall = _with_recall({"SD-0.5": 0.004, "SD-0.8": 0.004, "SD-0.95": 0.0045, "SD-0.99": 0.004}, sigma=0.0002)
    verdict = question_recall(lm, recall)
    assert verdict.verdict == "inconclusive" and "no recall setting separates the designs" in verdict.reason


def test_a_flat_recall_setting_is_left_out_and_said_so():
    studies = {"lm-128": lm_study("lm-128", 128, SHORT_BEST), "lm-2048": lm_study("lm-2048", 2048, LONG_BEST),
               "mqar-a": recall_study("mqar-a", 128, 8, {"SD-0.5": 0.2, "SD-0.8": 0.4, "SD-0.95": 0.5, "SD-0.99": 0.9},
                                      sigma=0.002),
               "mqar-b": recall_study("mqar-b", 256, 16, {"SD-0.5": 0.004, "SD-0.8": 0.004, "SD-0.95": 0.004,
                                                         "SD-0.99": 0.004}, sigma=0.0002)}  # fmt: skip
    lm, recall = range_settings(sweep(**studies))
    verdict = question_recall(lm, recall)
    assert verdict.verdict == "supported"
    assert "T=256, 16 pairs: the designs do not separate (left out)" in verdict.evidence


def test_questions_without_their_settings_say_no_data():
    assert question_context([], np.random.default_rng(0))[0].verdict == "no data"
    lm, _ = _with_recall({"SD-0.5": 0.5, "SD-0.8": 0.5, "SD-0.95": 0.5, "SD-0.99": 0.5})
    assert question_recall(lm, []).verdict == "no data"


def test_the_section_has_its_figures_and_text(tmp_path):
    studies = {"lm-128": lm_study("lm-128", 128, SHORT_BEST), "lm-2048": lm_study("lm-2048", 2048, LONG_BEST),
               "mqar-a": recall_study("mqar-a", 128, 8, {"SD-0.5": 0.9, "SD-0.8": 0.5, "SD-0.95": 0.6, "SD-0.99": 0.3}),
               "mqar-b": recall_study("mqar-b", 256, 16, {"SD-0.5": 0.9, "SD-0.8": 0.5, "SD-0.95": 0.6, "SD-0.99": 0.3})}
    data = sweep(**studies)
    ranged = analyse(data)
    ranged.figures = range_figures(ranged.lm, ranged.recall, ranged.bests, tmp_path)
    assert set(ranged.figures) == {"range-lm", "range-recall", "range-half-life"}
    assert all(path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG" for path in ranged.figures.values())
    figures = {study: {} for study in studies}
    md = _markdown(data, figures, [], ranged)
    assert "## Decay range across settings" in md and RANGE_METHOD in md and "## Findings" not in md
    assert "**1. Does the best decay range move with the context length?** — **supported**" in md
    assert "**2. Is the design that is best for perplexity also best for recall?** — **contradicted**" in md
    assert "(report_files/range-half-life.png)" in md
    page = _html(data, figures, [], ranged)
    assert page.count("data:image/png;base64,") == 3 and "Decay range across settings" in page
