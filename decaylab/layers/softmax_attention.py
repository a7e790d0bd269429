"""SoftmaxAttention: the Llama-style baseline mixer (bias-free q/k/v/o, rotary or other q/k encoding, causal SDPA).

    o = softmax(q k^T / sqrt(K) + causal mask) v,   y = W_o o

Decoding keeps a ``KVCache`` (``layers/kv_cache.py``) of the already-encoded keys and values ``[B, H, T_past, K]``,
appended to in place: a step writes its token's key and value into preallocated buffers and attends over their
first ``T_past + 1`` positions. ``cache_capacity`` (a hint: the final length when the caller knows it) sizes the buffers
when the cache is created or must grow. Rows of different lengths (a left-padded batch) are left-padded in the
cache, and ``valid [B, T_past]`` marks their real keys. A ``StaticKVCache`` (graphed decoding) reads the same way: its
``k`` and ``v`` are whole buffers and ``valid`` marks the filled slots, so its one query, at the last slot, sees
exactly the filled ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from decaylab.layers.base import MIXERS, MixerOutput
from decaylab.layers.kv_cache import KVCache
from decaylab.layers.positional import POSITIONAL_ENCODINGS
from decaylab.layers.projections import project


@MIXERS.register("softmax")
class SoftmaxAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int):
        super().__init__()
        d, H = cfg.d_model, cfg.n_heads
        self.n_heads, self.head_dim = H, d // H
        self.layer_idx = layer_idx
        self.pe = POSITIONAL_ENCODINGS.get(cfg.pos)(self.head_dim, cfg.rope_base)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, *, lower_bound=None, cache: KVCache | None = None, offset=0, use_cache=False,
                cache_capacity: int | None = None):
        B, T, d = x.shape
        H, K = self.n_heads, self.head_dim
        q, k, v = project(x, self.q_proj, self.k_proj, self.v_proj)  # one matmul on CUDA (layers/projections.py)
        q, k = self.pe(q.view(B, T, H, K), k.view(B, T, H, K), offset)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, T, K']
        v = v.view(B, T, H, K).transpose(1, 2)  # [B, H, T, K]
        valid = None
        if cache is not None:
            cache = cache.append(k, v, cache_capacity)
            k, v, valid = cache.k, cache.v, cache.valid
        elif use_cache:
            cache = KVCache.from_tensors(k, v, capacity=cache_capacity)
        past = k.shape[2] - T
        scale = self.head_dim**-0.5
        if past == 0:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        elif T == 1 and valid is None:  # one new token sees every key: no mask, so SDPA may take a fused kernel
            o = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:  # queries sit at positions past .. past + T - 1: each sees every key up to its own position
            pos_q = torch.arange(past, past + T, device=x.device)[:, None]
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= pos_q  # [T, T_past + T]
            if valid is not None:
                mask = mask & valid[:, None, None, :]  # [B, 1, T, T_past + T]: padding slots are never seen
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        y = self.o_proj(o.transpose(1, 2).reshape(B, T, d))
        return MixerOutput(y, None, cache if use_cache else None)
