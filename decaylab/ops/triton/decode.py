"""One-token decoding in one launch: the state update and the output of every batch row and head.

Generation calls the op with T = 1 once per layer and token. The chunked kernels would spend a forward pass's
launches and setup on a single token; the step itself is one read and one write of each head's ``[K, V]`` state:

    S' = diag(exp(g)) S + k v^T,    o = scale * S'^T q

``decode_step`` runs it as one kernel over ``(B * H, V / BV)`` programs, each holding a ``[BK, BV]`` tile of the
state at a time, in fp32 whatever the input dtype (as the recurrence does). Its reference is the recurrent
backend at T = 1 (``decaylab.ops.reference.recurrent``), against which ``tests/ops/test_triton_decode.py`` checks
it under ``TRITON_INTERPRET=1``. Forward only: ``triton_decay_linear_attention`` takes it for T = 1 when no
gradient is asked for (decoding runs under ``torch.no_grad``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from decaylab.ops.triton.blocks import COMPILE_OPTIONS
from decaylab.ops.triton.launch import launch_kernel

TILE = 64  # key and value channels per tile: a [64, 64] fp32 state tile per program step


@triton.jit
def decode_step_kernel(q, k, v, g, h0, o, ht, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                       BK: tl.constexpr, BV: tl.constexpr, VECTOR: tl.constexpr, HAS_H0: tl.constexpr):
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_bh = tl.program_id(0)
    i_v = tl.program_id(1)
    cols = i_v * BV + tl.arange(0, BV)
    v_t = tl.load(v + i_bh * V + cols).to(tl.float32)
    if not VECTOR:
        head_decay = tl.exp(tl.load(g + i_bh).to(tl.float32))
    acc = tl.zeros([BV], dtype=tl.float32)
    for i_k in tl.static_range(0, K, BK):
        rows = i_k + tl.arange(0, BK)
        q_t = tl.load(q + i_bh * K + rows).to(tl.float32)
        k_t = tl.load(k + i_bh * K + rows).to(tl.float32)
        tile = (i_bh * K + rows[:, None]) * V + cols[None, :]
        if HAS_H0:
            S = tl.load(h0 + tile)
        else:
            S = tl.zeros([BK, BV], dtype=tl.float32)
        if VECTOR:
            S = S * tl.exp(tl.load(g + i_bh * K + rows).to(tl.float32))[:, None]
        else:
            S = S * head_decay
        S = S + k_t[:, None] * v_t[None, :]
        tl.store(ht + tile, S)
        acc += tl.sum(q_t[:, None] * S, axis=0)
    tl.store(o + i_bh * V + cols, (acc * scale).to(o.dtype.element_ty))


def decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, scale: float,
                initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(o [B, 1, H, V], state [B, H, K, V] fp32)`` for one token; shapes as in ``decay_linear_attention``."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    if T != 1:
        raise ValueError(f"decode_step takes one token (T = 1); got T = {T}")
    q, k, v, log_decay = (t.contiguous() for t in (q, k, v, log_decay))
    h0 = None if initial_state is None else initial_state.float().contiguous()
    o = torch.empty_like(v)
    ht = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device)
    BK, BV = min(K, TILE), min(V, TILE)
    launch_kernel(
        decode_step_kernel, (B * H, V // BV),
        q, k, v, log_decay, ht if h0 is None else h0, o, ht, float(scale), H=H, K=K, V=V, BK=BK, BV=BV,
        VECTOR=log_decay.ndim == 4, HAS_H0=h0 is not None, **COMPILE_OPTIONS,
    )
    return o, ht


__all__ = ["decode_step", "decode_step_kernel"]
