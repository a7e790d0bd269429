"""Batches of prompts of different lengths, padded on the left (as transformers' ``generate`` pads them).

A recurrent state, a stateful decay and TPE would all absorb the padding if it went through the parallel forward,
so each row is prefilled on its own real tokens, exactly as if it were alone, and the rows' caches are then stacked
into one batch cache. That cache's ``offset`` is a ``[B]`` tensor of per-row positions, and softmax layers keep
their keys left-padded with a validity mask, so decoding carries on with the whole batch in one call per token and
every row continues at its own position.

Padding on the right only needs nothing: causal models never look ahead, so the real positions are unaffected.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from decaylab.model.lm import Cache


def left_padding(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """Per-row count of left-padding tokens ``[B]``, or None when no row is padded on the left.

    Raises ValueError when the real tokens of a row are not one block (holes, or padding on both sides).
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be [batch, tokens]; got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    if bool((lengths == 0).any()):
        raise ValueError("attention_mask has a row without a single real token; drop that row or give it a token")
    T = mask.shape[1]
    first = mask.int().argmax(dim=1)  # first real token of each row
    cols = torch.arange(T, device=mask.device)[None, :]
    block = (cols >= first[:, None]) & (cols < (first + lengths)[:, None])
    if not torch.equal(block, mask):
        raise ValueError("attention_mask must mark one block of real tokens per row (padding on the left or on the "
                         "right, not inside a prompt)")
    return first if bool((first > 0).any()) else None


def stack_caches(caches: Sequence[Cache]) -> Cache:
    """One batch Cache from per-row caches (batch one each), rows in order; offsets become a ``[B]`` tensor."""
    first = caches[0]
    layers = tuple(type(parts[0]).stack(parts) for parts in zip(*(c.layers for c in caches)))
    input_state = None if first.input_state is None else torch.cat([c.input_state for c in caches])
    offset = torch.tensor([int(c.offset) for c in caches], device=first.layers[0][0].device)
    return Cache(layers, input_state, offset)


def map_rows(cache: Cache, fn: Callable[[torch.Tensor], torch.Tensor]) -> Cache:
    """Apply ``fn`` (an indexing of the batch dimension) to every tensor of the cache; all are batch-first."""

    def apply(value):
        if isinstance(value, torch.Tensor):
            return fn(value)
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a per-layer NamedTuple cache
            return type(value)(*(apply(v) for v in value))
        return value

    offset = fn(cache.offset) if isinstance(cache.offset, torch.Tensor) else cache.offset
    return Cache(tuple(apply(layer) for layer in cache.layers), apply(cache.input_state), offset)


def prefill_left_padded(model, input_ids: torch.Tensor, pad: torch.Tensor,
                        logits_to_keep: int = 0) -> tuple[torch.Tensor, Cache]:
    """Run each row of a left-padded batch alone (``pad[b]`` padding tokens first).

    Returns ``(logits [B, T, vocab], cache)``: each row's logits sit at its real positions, zeros at its padding
    (``[B, logits_to_keep, vocab]``, the last positions, when ``logits_to_keep > 0``).
    """
    width = logits_to_keep or input_ids.shape[1]
    rows, caches = [], []
    for b in range(input_ids.shape[0]):
        logits, cache = model(input_ids[b : b + 1, int(pad[b]) :], use_cache=True, logits_to_keep=logits_to_keep)
        rows.append(torch.nn.functional.pad(logits, (0, 0, width - logits.shape[1], 0)))
        caches.append(cache)
    return torch.cat(rows), stack_caches(caches)
