"""Token-level loss of a language model over evaluation windows, kept per position in the window.

For windows ``(x, y)`` of length T (``y == -100`` where no loss is taken) the mean cross-entropy in nats is

    loss = sum_{windows, t} CE(logits_t, y_t) / #scored tokens,       ppl = exp(loss),
    bits per byte = loss / ln 2 * (#tokens / #bytes)                  (tokens and bytes of the same text)

Keeping the sums per position t gives the loss-by-position curve used for length extrapolation: position t
is predicted from t earlier tokens of the same window (each window starts from an empty state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class PositionLoss:
    """Sums of token losses (nats) and counts of scored tokens, per position in the window."""

    loss_sum: np.ndarray  # [T] float64
    count: np.ndarray  # [T] int64

    @property
    def tokens(self) -> int:
        return int(self.count.sum())

    @property
    def mean_loss(self) -> float:
        if self.tokens == 0:
            raise ValueError("no tokens were scored: the split is shorter than one evaluation window")
        return float(self.loss_sum.sum() / self.tokens)

    def by_position(self, bucket: int) -> list[list[float]]:
        """``[[bucket_start, mean loss], ...]`` over buckets of ``bucket`` positions (empty buckets left out)."""
        if bucket < 1:
            raise ValueError(f"bucket must be >= 1 position; got {bucket}")
        out = []
        for start in range(0, len(self.count), bucket):
            n = int(self.count[start : start + bucket].sum())
            if n:
                out.append([start, float(self.loss_sum[start : start + bucket].sum() / n)])
        return out


def perplexity(loss: float) -> float | None:
    """exp(loss); None when it overflows a float (JSON has no infinity)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return None


def bits_per_byte(loss: float, tokens: int, num_bytes: int) -> float:
    """Mean loss in nats per token -> bits per UTF-8 byte of the same text (``tokens`` tokens, ``num_bytes``)."""
    if tokens <= 0 or num_bytes <= 0:
        raise ValueError(f"bits per byte needs a positive token and byte count; got {tokens} tokens, {num_bytes} bytes")
    return loss / math.log(2.0) * tokens / num_bytes


@torch.no_grad()
def position_losses(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    max_tokens: int | None = None,
) -> PositionLoss:
    """Score every window of ``batches`` with ``model``; stop once ``max_tokens`` targets were scored.

    Args:
        model: maps ``x`` [B, T] LongTensor to logits [B, T, vocab].
        batches: ``(x, y)`` pairs, both [B, T]; ``y == -100`` marks targets without loss. T may differ
            between batches; the result covers the longest.
        max_tokens: optional cap on scored tokens (whole batches are kept, so it may be exceeded by one).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Sums stay on the model's device until the end: reading them back per batch would stall a GPU every batch.
    loss_sum = torch.zeros(0, dtype=torch.float64, device=device)
    count = torch.zeros(0, dtype=torch.int64, device=device)
    try:
        for x, y in batches:
            if x.shape != y.shape or x.ndim != 2:
                raise ValueError(f"evaluation batches must be (x, y) of equal shape [B, T]; got {x.shape}, {y.shape}")
            logits = model(x.to(device))
            if isinstance(logits, tuple):  # models that also return extras
                logits = logits[0]
            y = y.to(device)
            losses = F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
            ).view_as(y)  # [B, T]
            scored = y != IGNORE_INDEX
            T = y.shape[1]
            if T > len(count):  # grow the per-position sums to the longest window seen
                loss_sum = F.pad(loss_sum, (0, T - len(loss_sum)))
                count = F.pad(count, (0, T - len(count)))
            loss_sum[:T] += losses.masked_fill(~scored, 0.0).sum(0).double()
            count[:T] += scored.sum(0)
            if max_tokens is not None and int(count.sum()) >= max_tokens:
                break
    finally:
        model.train(was_training)
    return PositionLoss(loss_sum.cpu().numpy(), count.cpu().numpy())
