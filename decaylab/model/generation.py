"""Sampling from a DecayLM with its recurrent cache.

The prompt is prefilled with the parallel (chunked) forward, optionally in pieces of ``prefill_chunk_size`` tokens
to bound memory; every new token then costs one single-token forward that reads and updates the per-layer cache
(recurrent state, carried decay normalizer, position offset; a KV cache for softmax layers): O(1) work and memory
per token for linear attention. ``generate`` knows the final length, so a softmax KV cache is allocated once at the
prefill with room for every new token, and each step writes its key and value in place.

On a CUDA device the one-token step is captured once in a CUDA graph and replayed for every later token
(``cuda_graph="auto"``, the default; ``decaylab.model.decoding``): the step's few hundred kernel launches and its
Python then cost one launch. ``cuda_graph="off"`` steps eagerly, as on a CPU; ``"on"`` refuses to fall back.

Sampling: temperature 0 is greedy (argmax); otherwise logits / temperature, then top-k (keep the k largest),
then top-p (keep the smallest set of tokens whose probability reaches p), then a multinomial draw.
"""

from __future__ import annotations

import torch

from decaylab.model.decoding import check_graph_mode, make_decoder


def check_sampling_args(max_new_tokens, temperature, top_k, top_p, prefill_chunk_size) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] or None")
    if prefill_chunk_size is not None and prefill_chunk_size < 1:
        raise ValueError(f"prefill_chunk_size={prefill_chunk_size} must be a positive integer or None")


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids ``[B]`` from last-position logits ``[B, vocab]``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the most likely one always stays.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def prefill(model, input_ids: torch.Tensor, chunk_size: int | None = None, capacity: int | None = None):
    """Run the prompt through the model; returns ``(last-position logits [B, vocab], cache)``.

    ``capacity``: the number of positions the cache will hold (prompt + tokens to decode), when known; softmax KV
    caches then allocate once instead of growing.
    """
    T = input_ids.shape[1]
    step = T if chunk_size is None else chunk_size
    cache, logits = None, None
    for start in range(0, T, step):
        piece = input_ids[:, start : start + step]
        logits, cache = model(piece, cache=cache, use_cache=True, cache_capacity=capacity)
    return logits[:, -1], cache


def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, *, generator: torch.Generator | None = None,
             prefill_chunk_size: int | None = None, cuda_graph: str = "auto") -> torch.Tensor:
    """``[B, T]`` prompt ids -> ``[B, T + max_new_tokens]``; runs in eval mode and restores the previous mode.

    ``cuda_graph``: ``auto`` replays the decoding step from a CUDA graph on a CUDA device, ``on`` insists (an error
    where it cannot), ``off`` steps eagerly.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p, prefill_chunk_size)
    check_graph_mode(cuda_graph)  # before the prefill, not after it
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be a non-empty [batch, tokens] integer tensor (a prompt of >= 1 token)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [input_ids]
            if max_new_tokens == 0:
                return input_ids
            # The last sampled token is never fed back: the cache ends at T + max_new_tokens - 1 positions.
            capacity = input_ids.shape[1] + max_new_tokens - 1
            logits, cache = prefill(model, input_ids, prefill_chunk_size, capacity)
            step = make_decoder(model, cache, max_new_tokens - 1, cuda_graph)
            for i in range(max_new_tokens):
                next_ids = sample_next(logits, temperature, top_k, top_p, generator).to(input_ids.dtype)[:, None]
                out.append(next_ids)
                if i + 1 < max_new_tokens:
                    logits = step(next_ids)
            return torch.cat(out, dim=1)
    finally:
        model.train(was_training)
