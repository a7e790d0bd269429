"""Length extrapolation: perplexity on windows longer than the training context, and loss by position.

For each factor f the test split is cut into windows of f x (training context) tokens; each window starts
from an empty state, so position t is predicted from the t tokens before it. A model that extrapolates keeps
its loss flat (or falling) past the training context; one that does not shows a rising curve there.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch

from decaylab.evaluation.perplexity import PositionLoss, perplexity, position_losses

# Tokens per evaluation batch: batch size = BATCH_TOKENS // window length (at least one window).
BATCH_TOKENS = 8192
# On a GPU a small model's evaluation forward is bound by the host launching its kernels, not by the card, so
# batches grow until their float32 logits would pass this many values (2 GiB), up to GPU_BATCH_TOKENS tokens.
GPU_LOGIT_VALUES = 1 << 29
GPU_BATCH_TOKENS = 65536
# Most points on the loss-by-position curve (positions are grouped into at most this many equal buckets).
POSITION_BUCKETS = 64


def batch_tokens_for(device: torch.device, vocab_size: int) -> int:
    """Tokens per evaluation batch: BATCH_TOKENS on a CPU; on a GPU the most, by powers of two up to
    GPU_BATCH_TOKENS, whose float32 logits stay within GPU_LOGIT_VALUES (never fewer than BATCH_TOKENS). The windows
    scored are the same; only how many share a forward changes."""
    if torch.device(device).type != "cuda":
        return BATCH_TOKENS
    tokens = BATCH_TOKENS
    while tokens * 2 <= GPU_BATCH_TOKENS and tokens * 2 * vocab_size <= GPU_LOGIT_VALUES:
        tokens *= 2
    return tokens


def batch_size_for(seq_len: int, batch_tokens: int = BATCH_TOKENS) -> int:
    return max(1, batch_tokens // seq_len)


def length_extrapolation(
    model: torch.nn.Module,
    windows: Callable[[int, int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    train_seq_len: int,
    factors: Sequence[int],
    *,
    max_tokens: int | None = None,
    batch_tokens: int = BATCH_TOKENS,
    known: dict[int, PositionLoss] | None = None,
    available_tokens: int | None = None,
) -> dict[str, Any]:
    """Perplexity at ``f x train_seq_len`` for each factor, and the loss-by-position curve of the longest.

    Args:
        model: the language model.
        windows: ``windows(seq_len, batch_size)`` yields ``(x, y)`` evaluation batches of that length
            (e.g. ``functools.partial(dataset.eval_batches, "test")``).
        train_seq_len: the context length the model was trained with.
        factors: multiples of the training context, e.g. (1, 2, 4, 8).
        max_tokens: optional cap on scored tokens per length.
        known: already computed results by window length (the test perplexity at 1x), reused as they are.
        available_tokens: scorable tokens in the split; lengths longer than this are skipped (a window that
            is mostly padding would not measure that length).
    Returns:
        ``{"extrapolation": {"1": ppl, ...}, "extrapolation_context": {"1": tokens, ...},
        "extrapolation_loss": {"1": loss, ...}, "loss_by_position": [[bucket_start, loss], ...],
        "loss_by_position_context": tokens}``. A length with no full window in the split gives ``None``.
    """
    bad = [f for f in factors if not isinstance(f, int) or isinstance(f, bool) or f < 1]
    if bad:
        raise ValueError(f"extrapolation factors must be integers >= 1 (multiples of the training context); got {bad}")
    known = dict(known or {})
    out: dict[str, Any] = {"extrapolation": {}, "extrapolation_context": {}, "extrapolation_loss": {}}
    longest: PositionLoss | None = None
    for factor in sorted(set(factors)):
        seq_len = factor * train_seq_len
        key = str(factor)
        out["extrapolation_context"][key] = seq_len
        if available_tokens is not None and available_tokens < seq_len:
            out["extrapolation"][key] = out["extrapolation_loss"][key] = None
            continue
        result = known.get(seq_len)
        if result is None:
            batches = windows(seq_len, batch_size_for(seq_len, batch_tokens))
            result = position_losses(model, batches, max_tokens=max_tokens)
        if result.tokens == 0:  # nothing scored
            out["extrapolation"][key] = out["extrapolation_loss"][key] = None
            continue
        out["extrapolation_loss"][key] = result.mean_loss
        out["extrapolation"][key] = perplexity(result.mean_loss)
        longest = result
    if longest is not None:
        context = len(longest.count)
        out["loss_by_position"] = longest.by_position(-(-context // POSITION_BUCKETS))  # at most 64 buckets
        out["loss_by_position_context"] = context
    return out
