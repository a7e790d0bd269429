"""Decay statistics per layer: the distribution of lambda = exp(log_decay) on a fixed text.

For each layer the model's log decays ``[B, T, H]`` (scalar) or ``[B, T, H, K]`` (vector) are flattened over
tokens x heads (x channels) and summarised by median, 25th/75th percentiles, mean, std, min and max of
lambda, plus the same over all layers pooled (``"layer": "all"``). Layers are numbered from 1, as in the
paper's median-decay figure.

Effective memory is the half-life at the median decay: the number of tokens after which a contribution to
the state has shrunk to one half,

    half_life = ln(0.5) / ln(lambda_median)            (lambda_median = 1  ->  None: memory never fades)

Statistics are computed in float64 from the fp32 log decays, so decays a hair below 1 (log_decay = -1e-9)
still give a finite half-life instead of rounding to lambda = 1.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

# Keys of one statistics entry, in the order they are written to eval.json.
STAT_KEYS = ("median", "p25", "p75", "mean", "std", "min", "max")


def half_life(decay: float) -> float | None:
    """Tokens until a state contribution halves under constant decay ``decay`` (None when it never does).

    ``decay = 0`` forgets at once (half-life 0); ``decay = 1`` never forgets, which JSON cannot write as
    infinity, so it is None (``null`` in eval.json).
    """
    if not 0.0 <= decay <= 1.0 or math.isnan(decay):
        raise ValueError(f"a decay must lie in [0, 1]; got {decay}")
    if decay == 1.0:
        return None
    if decay == 0.0:
        return 0.0
    return math.log(0.5) / math.log(decay)


def summarize_decays(log_decay: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """Statistics of lambda = exp(log_decay) over every element; see the module docstring for the keys."""
    if isinstance(log_decay, torch.Tensor):
        log_decay = log_decay.detach().to("cpu", torch.float64).numpy()
    lam = np.exp(np.asarray(log_decay, dtype=np.float64).reshape(-1))
    if lam.size == 0:
        raise ValueError("no decay values to summarise: the evaluation text is empty")
    if not np.isfinite(lam).all():
        raise FloatingPointError("the model produced non-finite log decays; the checkpoint is probably diverged")
    p25, median, p75 = np.percentile(lam, [25.0, 50.0, 75.0])
    stats = {
        "median": float(median),
        "p25": float(p25),
        "p75": float(p75),
        "mean": float(lam.mean()),
        "std": float(lam.std()),
        "min": float(lam.min()),
        "max": float(lam.max()),
        "count": int(lam.size),
    }
    stats["half_life_tokens"] = half_life(min(stats["median"], 1.0))
    return stats


@torch.no_grad()
def collect_log_decays(model: torch.nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor | None]:
    """One forward pass with ``return_decays=True``; fp32 log decays on the CPU, None for layers without decay."""
    if input_ids.ndim == 1:
        input_ids = input_ids[None]  # [T] -> [1, T]
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [T] or [B, T] with T >= 1; got shape {tuple(input_ids.shape)}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        _, log_decays = model(input_ids.to(device), return_decays=True)
    finally:
        model.train(was_training)
    return [None if d is None else d.detach().float().cpu() for d in (log_decays or [])]


def decay_statistics(model: torch.nn.Module, input_ids: torch.Tensor) -> list[dict[str, Any]]:
    """Per-layer statistics of lambda on ``input_ids`` ([T] or [B, T]), then one pooled entry.

    Returns a list of dicts: ``{"layer": 1, "granularity": "vector", "median": ..., "p25": ..., "p75": ...,
    "mean": ..., "std": ..., "min": ..., "max": ..., "count": ..., "half_life_tokens": ...}`` for every layer
    that has a decay, followed by ``{"layer": "all", ...}`` over all of them. A model without decay (the
    softmax baseline) gives an empty list.
    """
    log_decays = collect_log_decays(model, input_ids)
    out, flat = [], []
    for index, log_decay in enumerate(log_decays, start=1):
        if log_decay is None:
            continue
        granularity = "scalar" if log_decay.ndim == 3 else "vector"  # [B, T, H] vs [B, T, H, K]
        out.append({"layer": index, "granularity": granularity, **summarize_decays(log_decay)})
        flat.append(log_decay.reshape(-1))
    if flat:
        kinds = {s["granularity"] for s in out}
        granularity = kinds.pop() if len(kinds) == 1 else "mixed"
        out.append({"layer": "all", "granularity": granularity, **summarize_decays(torch.cat(flat))})
    return out


def per_layer(stats: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-layer entries of ``decay_statistics`` output (without the pooled one), by layer number."""
    return sorted((s for s in stats if isinstance(s.get("layer"), int)), key=lambda s: s["layer"])


def pooled(stats: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The all-layers entry of ``decay_statistics`` output, or None when there is none."""
    return next((s for s in stats if s.get("layer") == "all"), None)
