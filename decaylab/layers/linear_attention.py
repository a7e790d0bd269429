"""DecayLinearAttention: the token mixer of the decay linear transformer.

    q = silu(W_q x),  k = silu(W_k x)  (or the key derived from the decay when shared),  v = W_v x
    (W_q x, W_k x, W_v x) mixed over the last few tokens first when short_conv > 0     layers/short_conv.py
    (log lambda, k_shared, decay state) = decay(x)                 one DECAY_KINDS module, called blindly
    q, k = PE(q, k, offset)                                        none | rope | lrpe
    S_t = diag(lambda_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t    decaylab.ops (scale 1)
    y = W_o GatedRMSNorm(o, gate),  gate = U(D x)                  low-rank output gate, RMSNorm over all of d

All projections are bias-free. The layer branches only on the decay's shape (``log_decay.ndim``: scalar vs vector),
never on a kind's name. Its cache is ``LinearAttentionCache(state, decay_state, conv_state)``: the fp32 recurrent
state ``[B, H, K', V]``, the decay's own carried state (lightnet, lssp) and the short convolution's last inputs, so
that decoding token by token reproduces the parallel forward exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from decaylab.decay import DecayDims, build_decay
from decaylab.layers.base import MIXERS, MixerOutput
from decaylab.layers.norms import GatedRMSNorm
from decaylab.layers.positional import POSITIONAL_ENCODINGS
from decaylab.layers.projections import project
from decaylab.layers.short_conv import ShortConv
from decaylab.ops import decay_linear_attention


class LinearAttentionCache(NamedTuple):
    state: torch.Tensor
    """``[B, H, K', V]`` recurrent state (fp32, fp64 for fp64 models); K' = head dim, doubled by lrpe."""
    decay_state: torch.Tensor | None
    """The decay's carried state (lightnet/lssp normalizer) or None."""
    conv_state: torch.Tensor | None = None
    """The short convolution's last inputs ``[B, W - 1, channels]`` or None (no convolution)."""

    @classmethod
    def stack(cls, caches) -> LinearAttentionCache:
        """One batch from per-row caches (``decaylab.model.padding``)."""
        def cat(field):
            return None if getattr(caches[0], field) is None else torch.cat([getattr(c, field) for c in caches])

        return cls(*(cat(field) for field in cls._fields))

    def to_static(self, steps: int) -> LinearAttentionCache:
        """A copy of its own (contiguous) for a decoding step that updates it in place (``model/decoding.py``); the
        state has a fixed size, so any number of ``steps`` fits."""
        return LinearAttentionCache(*(None if t is None else t.clone(memory_format=torch.contiguous_format)
                                      for t in self))  # fmt: skip


@MIXERS.register("linear")
class DecayLinearAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        d, H = cfg.d_model, cfg.n_heads
        self.n_heads, self.head_dim = H, d // H
        self.layer_idx = layer_idx
        self.scale = 1.0
        self.backend = "auto"
        self.pe = POSITIONAL_ENCODINGS.get(cfg.pos)(self.head_dim, cfg.rope_base)
        dims = DecayDims(d, H, self.pe.decay_channels, layer_idx, cfg.n_layers)
        self.decay = build_decay(cfg.decay, dims)
        self.q_proj = nn.Linear(d, d, bias=False)
        # A shared decay owns the key projection (the key is a function of the decay); otherwise the layer does.
        self.k_proj = None if cfg.decay.share else nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.short_conv = ShortConv(d * (2 if cfg.decay.share else 3), cfg.short_conv) if cfg.short_conv else None
        rank = cfg.gate_rank or self.head_dim
        self.gate = nn.Sequential(nn.Linear(d, rank, bias=False), nn.Linear(rank, d, bias=False))
        self.norm = GatedRMSNorm(d, cfg.norm_eps)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, *, lower_bound=None, cache: LinearAttentionCache | None = None, offset=0, use_cache=False,
                cache_capacity=None):  # the state has a fixed size: a capacity hint has nothing to size
        B, T, d = x.shape
        H, K = self.n_heads, self.head_dim
        decay = self.decay(x, lower_bound=lower_bound, state=None if cache is None else cache.decay_state)
        # q, k, v and the gate's first projection read x: one matmul on CUDA (layers/projections.py)
        if self.k_proj is None:
            q, v, gate = project(x, self.q_proj, self.v_proj, self.gate[0])
        else:
            q, k, v, gate = project(x, self.q_proj, self.k_proj, self.v_proj, self.gate[0])
        conv_state = None
        if self.short_conv is not None:
            mixed, conv_state = self.short_conv(torch.cat([q, v] if self.k_proj is None else [q, k, v], dim=-1),
                                                None if cache is None else cache.conv_state)
            if self.k_proj is None:
                q, v = mixed.split(d, dim=-1)
            else:
                q, k, v = mixed.split(d, dim=-1)
        q = F.silu(q).view(B, T, H, K)
        if decay.key is None:
            k = F.silu(k).view(B, T, H, K)
        else:
            k = self.pe.widen_channels(decay.key).to(q.dtype)  # [B, T, H, K]; q's dtype also under autocast
        v = v.view(B, T, H, K)
        q, k = self.pe(q, k, offset)
        log_decay = decay.log_decay
        if log_decay.ndim == 4:  # vector decay: lay it out like the encoded key channels
            log_decay = self.pe.widen_decay(self.pe.widen_channels(log_decay))
        o, state = decay_linear_attention(
            q,
            k,
            v,
            log_decay,
            scale=self.scale,
            initial_state=None if cache is None else cache.state,
            output_final_state=use_cache,
            backend=self.backend,
            # every decay kind returns log_decay <= 0 (tests/decay/test_kinds.py); checking the values again would
            # read a reduction back from the GPU in every layer, a sync that stops the host queueing ahead
            check_decay=False,
        )
        y = self.o_proj(self.norm(o.reshape(B, T, d), self.gate[1](gate)))
        new_cache = LinearAttentionCache(state, decay.state, conv_state) if use_cache else None
        return MixerOutput(y, decay.log_decay, new_cache)
