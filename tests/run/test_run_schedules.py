"""Learning-rate schedules: warmup, cosine, wsd, constant, and an unknown name."""

from __future__ import annotations

import math

import pytest

from decaylab.run.config import TrainConfig
from decaylab.run.schedules import SCHEDULES, learning_rate


def _lrs(cfg: TrainConfig) -> list[float]:
    return [learning_rate(s, cfg) for s in range(cfg.max_steps)]


def test_warmup_is_linear_and_reaches_peak():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=2e-3, schedule="cosine")
    lrs = _lrs(cfg)
    assert lrs[:10] == pytest.approx([2e-3 * (s + 1) / 10 for s in range(10)])
    assert max(lrs) == pytest.approx(2e-3)


def test_cosine_formula_and_floor():
    cfg = TrainConfig(max_steps=50, warmup_steps=5, lr=1.0, min_lr_ratio=0.1, schedule="cosine")
    for s in (5, 17, 30, 49):
        p = (s - 5) / 45
        assert learning_rate(s, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
    lrs = _lrs(cfg)[5:]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])), "cosine must not increase after warmup"
    assert min(lrs) >= 0.1 - 1e-12


def test_wsd_is_flat_then_decays_linearly_to_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.0, schedule="wsd", wsd_decay_fraction=0.2)
    lrs = _lrs(cfg)
    assert lrs[10:80] == [1.0] * 70
    decay = lrs[80:]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert decay[-1] == pytest.approx(0.0)
    assert decay[9] == pytest.approx(0.5)


def test_constant_schedule_and_unknown_schedule():
    cfg = TrainConfig(max_steps=20, warmup_steps=4, lr=0.5, schedule="constant")
    assert _lrs(cfg)[4:] == [0.5] * 16
    assert set(SCHEDULES.names()) >= {"cosine", "wsd", "constant"}
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        TrainConfig(schedule="cosin")
