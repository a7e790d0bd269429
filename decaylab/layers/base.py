"""The token-mixer interface and the ``MIXERS`` registry (``linear``: decay linear attention; ``softmax``).

A mixer is built as ``MIXERS.get(name)(cfg, layer_idx)`` where ``cfg`` has the model fields it reads (d_model,
n_heads, n_layers, pos, rope_base, norm_eps, and for the linear mixer decay, gate_rank and short_conv). Its forward is

    forward(x [B, T, d], *, lower_bound=None, cache=None, offset=0, use_cache=False, cache_capacity=None) -> MixerOutput

``offset`` is the absolute position of x's first token; ``cache`` is what a previous call returned;
``cache_capacity`` is a hint for a cache that grows with the sequence (softmax's KV cache): the number of positions
it should make room for when it is created or must grow (a fixed-size state ignores it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from decaylab.registry import Registry

MIXERS: Registry = Registry("mixer")


class MixerOutput(NamedTuple):
    y: torch.Tensor
    """``[B, T, d]``."""
    log_decay: torch.Tensor | None = None
    """The layer's log decay as the decay produced it (before any positional-encoding repetition)."""
    cache: Any = None
    """The updated per-layer cache when ``use_cache`` (or a cache was given), else None."""
