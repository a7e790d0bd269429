"""Chunked decayed linear attention in pure torch: the fast CPU path (and the GPU fallback without Triton).

    S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t

The sequence is cut into chunks of C tokens (the last one zero-padded: k = 0 adds nothing to the state and a
log decay of 0 keeps it). Inside a chunk the output is a causal, decayed attention (C x C, batched matmuls);
across chunks only one K x V state per chunk is passed on, sequentially over T / C chunks. Time and memory
are linear in T: nothing T x T and no per-token states are formed (states are kept per chunk).

Numerics: all arithmetic runs in fp32 (fp64 for fp64 inputs) whatever the input dtype, with autocast off
(:mod:`decaylab.ops.precision`). Exponents are sums of log decays over one segment, formed by matrix products
that add only the decays inside the segment (:mod:`decaylab.ops.chunk.segments`); all are <= 0 except in the
factored vector path, whose factors are bounded by exp(+-40) in fp32 (:mod:`decaylab.ops.chunk.factored`).
Per-step log decays from 0 down to -1e3 give finite outputs and gradients. The output comes back contiguous in
the input dtype, the final state in the compute dtype. The backward is written by hand (see
:mod:`decaylab.ops.chunk.function`); double backward is not supported.
"""

from __future__ import annotations

import torch

from decaylab.ops.backends import BACKENDS
from decaylab.ops.chunk import function
from decaylab.ops.precision import autocast_off, full_precision

DEFAULT_CHUNK_SIZE = 64


def _to_chunks(x: torch.Tensor, C: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, T, H, D]`` -> zero-padded, chunk-major ``[B*H, N, C, D]`` in ``dtype`` (one copy)."""
    B, T, H, D = x.shape
    N = -(-T // C)
    out = x.new_empty(B, H, N * C, D, dtype=dtype)
    out[:, :, T:].zero_()
    out[:, :, :T].copy_(x.transpose(1, 2))
    return out.view(B * H, N, C, D)


def _from_chunks(x: torch.Tensor, B: int, T: int, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`_to_chunks`: ``[B*H, N, C, D]`` -> contiguous ``[B, T, H, D]`` in ``dtype`` (one copy)."""
    Z, N, C, D = x.shape
    out = x.new_empty(B, T, Z // B, D, dtype=dtype)
    return out.copy_(x.view(B, Z // B, N * C, D)[:, :, :T].transpose(1, 2))


class ChunkDecayLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_decay, initial_state, scale, chunk_size):
        B, T, H, K = q.shape
        V = v.shape[-1]
        dtype = torch.promote_types(q.dtype, torch.float32)
        scalar = log_decay.ndim == 3
        C = chunk_size
        q_c = _to_chunks(q, C, dtype).mul_(scale)  # [Z, N, C, K]; scale folded into q once
        k_c = _to_chunks(k, C, dtype)
        v_c = _to_chunks(v, C, dtype)
        ld_c = _to_chunks(log_decay.unsqueeze(-1) if scalar else log_decay, C, dtype)  # [Z, N, C, 1 or K]
        h0 = None if initial_state is None else initial_state.to(dtype).reshape(B * H, K, V)

        o, states, final, A, decay_matrix = function.forward(q_c, k_c, v_c, ld_c, h0)

        ctx.save_for_backward(q_c, k_c, v_c, ld_c, states, final, A, decay_matrix)
        ctx.set_materialize_grads(False)  # an unused output (o or the final state) arrives as None
        ctx.shape, ctx.scale, ctx.scalar, ctx.has_initial = (B, T, H, K, V), scale, scalar, h0 is not None
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, log_decay.dtype, None if h0 is None else initial_state.dtype)
        ctx.device = q.device
        return _from_chunks(o, B, T, q.dtype), final.view(B, H, K, V)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_o, d_final):
        # The autograd engine runs this under whatever autocast is on where .backward() was called.
        with autocast_off(ctx.device):
            return ChunkDecayLinearAttention._backward(ctx, d_o, d_final)

    @staticmethod
    def _backward(ctx, d_o, d_final):
        q_c, k_c, v_c, ld_c, states, final, A, decay_matrix = ctx.saved_tensors
        B, T, H, K, V = ctx.shape
        Z, N, C, _ = q_c.shape
        do_c = _to_chunks(d_o, C, q_c.dtype) if d_o is not None else q_c.new_zeros(Z, N, C, V)
        d_final_c = None if d_final is None else d_final.to(q_c.dtype).reshape(Z, K, V)
        h0 = q_c.new_empty(0) if ctx.has_initial else None  # only its presence matters to the backward

        dq, dk, dv, dld, dh0 = function.backward(
            do_c, d_final_c, q_c, k_c, v_c, ld_c, h0, states, final, A, decay_matrix
        )

        q_dtype, k_dtype, v_dtype, ld_dtype, h0_dtype = ctx.dtypes
        dq = _from_chunks(dq.mul_(ctx.scale), B, T, q_dtype)
        dk, dv = _from_chunks(dk, B, T, k_dtype), _from_chunks(dv, B, T, v_dtype)
        dld = _from_chunks(dld, B, T, ld_dtype)
        if ctx.scalar:
            dld = dld.squeeze(-1)  # [B, T, H]
        dh0 = None if dh0 is None else dh0.view(B, H, K, V).to(h0_dtype)
        return dq, dk, dv, dld, dh0, None, None


@full_precision
def chunk_decay_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked decayed linear attention; shapes as in :func:`decaylab.ops.decay_linear_attention`.

    Args:
        chunk_size: tokens per chunk, a power of two; short sequences use the next power of two >= T instead.
    """
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two >= 1; got {chunk_size}")
    T = q.shape[1]
    C = min(chunk_size, 1 << max(T - 1, 0).bit_length())  # no padding a 5-token call up to 64
    o, final = ChunkDecayLinearAttention.apply(q, k, v, log_decay, initial_state, float(scale), C)
    return o, (final if output_final_state else None)


BACKENDS.register("chunk")(chunk_decay_linear_attention)

__all__ = ["chunk_decay_linear_attention", "DEFAULT_CHUNK_SIZE"]
