"""Builders of synthetic report rows and sweeps for the verdict and render tests (rows whose answer is known)."""

from __future__ import annotations

import math
from pathlib import Path

from decaylab.report.data import Row, Stat, SweepData

BASE = {"model.mixer": "linear", "model.pos": "none", "model.decay.kind": "simple", "model.decay.p": 0.99,
        "model.decay.granularity": "vector", "model.decay.share": False}  # fmt: skip
NOISE = (-1.0, 0.0, 1.0, -0.5, 0.5)  # per-seed offsets; a pair i starts at NOISE[i % 5], so pair means vary too


def noise(seed, shift):
    return NOISE[(seed + shift) % len(NOISE)]


def row(label, scores, study="s", decay=None, metric="test_ppl", seeds=None, **config):
    """A finished row; ``decay`` gives each seed's median decay (all layers), kept for sweep() below."""
    cfg = {**BASE, **{k.replace("__", "."): v for k, v in config.items()}}
    seeds = list(seeds if seeds is not None else range(len(scores)))
    r = Row(study, label, 0, [f"{label}-{s}" for s in seeds], ["finished"] * len(seeds), cfg,
            {metric: Stat(tuple(scores), tuple(seeds))}, [], seeds)  # fmt: skip
    r.decay = decay
    return r


def ppl(base, gain, sigma=0.0, seeds=3, shift=0):
    """Per-seed perplexities base * exp(-(gain + sigma * noise_s)): gain in ln ppl over a control at ``base``."""
    return [base * math.exp(-(gain + sigma * noise(s, shift))) for s in range(seeds)]


def sweep(**studies) -> SweepData:
    rows = dict(studies)
    decay = {}
    for rs in rows.values():
        for r in rs:
            values = getattr(r, "decay", None) or [0.5] * len(r.run_ids)
            decay.update({run: {0: {"median": v}} for run, v in zip(r.run_ids, values)})
    return SweepData(Path("."), "t", "", {}, [(n, n) for n in rows], rows, {}, decay, {})
