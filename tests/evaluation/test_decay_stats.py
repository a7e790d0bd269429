"""Decay statistics: values against a direct sort-based computation, half-life, layer handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decaylab.evaluation.decay_stats import decay_statistics, half_life, pooled, per_layer, summarize_decays


class FixedDecayLM(torch.nn.Module):
    """Returns the given per-layer log decays (None = a layer without decay) and random logits."""

    def __init__(self, log_decays):
        super().__init__()
        self.log_decays = log_decays
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen_training = None

    def forward(self, ids, return_decays=False):
        self.seen_training = self.training
        logits = torch.randn(*ids.shape, 7)
        return (logits, self.log_decays) if return_decays else logits


def _random_log_decay(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.logsigmoid(3 * torch.randn(*shape, generator=g) + 2)


def _sorted_percentile(values: np.ndarray, q: float) -> float:
    """Linear-interpolation percentile written out by hand, as an independent reference."""
    v = np.sort(values)
    pos = q / 100 * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


def test_summary_matches_direct_computation():
    log_decay = _random_log_decay(1, 37, 3, 5, seed=0)  # [B, T, H, K], odd count 555
    lam = np.exp(log_decay.double().numpy().reshape(-1))
    s = summarize_decays(log_decay)
    assert s["count"] == 555
    assert s["median"] == pytest.approx(float(np.sort(lam)[277]), rel=1e-12)  # middle element of 555
    assert s["p25"] == pytest.approx(_sorted_percentile(lam, 25), rel=1e-12)
    assert s["p75"] == pytest.approx(_sorted_percentile(lam, 75), rel=1e-12)
    assert s["mean"] == pytest.approx(float(lam.sum() / lam.size), rel=1e-12)
    assert s["min"] == pytest.approx(float(lam.min())) and s["max"] == pytest.approx(float(lam.max()))
    assert s["p25"] <= s["median"] <= s["p75"]
    assert s["half_life_tokens"] == pytest.approx(math.log(0.5) / math.log(s["median"]))


def test_half_life_values():
    assert half_life(0.5) == pytest.approx(1.0)
    assert half_life(0.25) == pytest.approx(0.5)
    assert half_life(0.99) == pytest.approx(68.967, rel=1e-4)
    assert half_life(1.0) is None
    assert half_life(0.0) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        half_life(1.5)


def test_decays_just_below_one_keep_a_finite_half_life():
    s = summarize_decays(torch.full((1, 4, 2), -1e-9))  # fp32 exp would round lambda to exactly 1
    assert s["half_life_tokens"] == pytest.approx(math.log(2) * 1e9, rel=1e-3)
    assert summarize_decays(torch.zeros(1, 4, 2))["half_life_tokens"] is None


def test_per_layer_and_pooled_entries():
    scalar = _random_log_decay(1, 16, 4, seed=1)  # [B, T, H]
    vector = _random_log_decay(1, 16, 4, 8, seed=2)  # [B, T, H, K]
    model = FixedDecayLM([scalar, None, vector]).train()
    stats = decay_statistics(model, torch.randint(0, 7, (16,)))
    assert model.seen_training is False and model.training  # evaluated in eval mode, mode restored
    layers = per_layer(stats)
    assert [s["layer"] for s in layers] == [1, 3]  # 1-based, the decay-free layer 2 left out
    assert [s["granularity"] for s in layers] == ["scalar", "vector"]
    assert layers[0]["count"] == 64 and layers[1]["count"] == 512
    assert layers[0]["median"] == pytest.approx(summarize_decays(scalar)["median"])
    both = pooled(stats)
    assert both["granularity"] == "mixed" and both["count"] == 576
    expected = np.median(np.exp(torch.cat([scalar.reshape(-1), vector.reshape(-1)]).double().numpy()))
    assert both["median"] == pytest.approx(float(expected), rel=1e-12)


def test_model_without_decay_gives_no_stats():
    assert decay_statistics(FixedDecayLM([None, None]), torch.randint(0, 7, (1, 8))) == []
    assert decay_statistics(FixedDecayLM([]), torch.randint(0, 7, (1, 8))) == []


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="input_ids must be"):
        decay_statistics(FixedDecayLM([]), torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(FloatingPointError, match="non-finite"):
        summarize_decays(torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize("granularity", ["vector", "scalar"])
def test_simple_decay_at_init_has_median_p(granularity):
    """Simple Decay initialises its bias so the median decay equals p; the statistics must find it."""
    from decaylab.model import DecayLM, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", {"decay.p": 0.9, "decay.granularity": granularity})
    stats = decay_statistics(DecayLM(cfg), torch.randint(0, cfg.vocab_size, (300,)))
    channels = cfg.n_heads * (cfg.head_dim if granularity == "vector" else 1)
    assert [s["count"] for s in stats] == [300 * channels] * cfg.n_layers + [300 * channels * cfg.n_layers]
    assert {s["granularity"] for s in stats} == {granularity}
    for s in stats:
        assert s["median"] == pytest.approx(0.9, abs=0.01)
        assert s["half_life_tokens"] == pytest.approx(math.log(0.5) / math.log(s["median"]))
