"""The Triton backend's public function and its autograd wrapper.

    S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t

Same signature as every ``decaylab.ops`` backend, plus ``cu_seqlens`` for packed variable-length sequences.
Inputs the kernels do not cover (head dims outside 16/32/64/128, float64) are handed to the torch chunked
backend, one sequence at a time when packed.
"""

from __future__ import annotations

import torch

from decaylab.ops.triton import kernels
from decaylab.ops.triton.configs import (
    GATE_CARRY_STRIDE,
    SPAN_LIMIT,
    SUPPORTED_DIMS,
    active_config,
    interpreter_active,
)

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _launch_options(q: torch.Tensor, log_decay: torch.Tensor, cu_seqlens: torch.Tensor | None) -> dict:
    B, T, H, K = q.shape
    vector = log_decay.ndim == 4
    cfg = active_config(q.device, vector, K, -1)
    if GATE_CARRY_STRIDE % cfg.chunk:
        raise ValueError(f"chunk size {cfg.chunk} must divide the gate-carry stride {GATE_CARRY_STRIDE}")
    return dict(
        H=H, K=K, BT=cfg.chunk, VECTOR=vector, VARLEN=cu_seqlens is not None, SPAN_LIMIT=SPAN_LIMIT,
        # fp16 cannot hold the vector fast path's 2^±50 split factors: those dots run on fp32 operands
        INTRA_FP32=q.dtype != torch.bfloat16,
        PREC="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


class ChunkDecayAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens):
        B, T, H, K = q.shape
        V = v.shape[-1]
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        opts = _launch_options(q, log_decay, cu_seqlens)
        o = torch.empty_like(v)
        ht = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
        kernels.forward_kernel[(N * H,)](
            q, k, v, log_decay, o, initial_state, ht, cu_seqlens, scale, T, V=V,
            HAS_H0=initial_state is not None, STORE_HT=output_final_state, **opts,
        )
        ctx.save_for_backward(q, k, v, log_decay, initial_state, ht, cu_seqlens)
        ctx.scale = scale
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, log_decay, initial_state, ht, cu_seqlens = ctx.saved_tensors
        B, T, H, K = q.shape
        V = v.shape[-1]
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        vector = log_decay.ndim == 4
        opts = _launch_options(q, log_decay, cu_seqlens)
        do = do.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        qdq = q.new_empty(log_decay.shape, dtype=torch.float32)  # q * dq (summed over K for scalar decay)
        dg = q.new_empty(log_decay.shape, dtype=torch.float32)
        has_h0 = initial_state is not None
        states, boundary_offsets = _boundary_buffers(q, v, T, cu_seqlens)
        kernels.backward_dq_kernel[(N * H,)](
            q, k, v, log_decay, do, dq, qdq, initial_state, states, boundary_offsets, cu_seqlens, ctx.scale, T,
            V=V, HAS_H0=has_h0, STRIDE=GATE_CARRY_STRIDE, **opts
        )
        dg_final = None
        if dht is not None:
            dht = dht.float().contiguous()
            dg_final = (ht * dht).sum(-1)  # [N, H, K]: the final state's share of the gate gradient
            if not vector:
                dg_final = dg_final.sum(-1)  # [N, H]
            dg_final = dg_final.contiguous()
        dh0 = torch.empty_like(initial_state) if has_h0 else None
        kernels.backward_dkv_kernel[(N * H,)](
            q, k, v, log_decay, do, qdq, dk, dv, dg, dht, dg_final, dh0, states, boundary_offsets, cu_seqlens,
            ctx.scale, T, V=V, HAS_DHT=dht is not None, STORE_DH0=has_h0, STRIDE=GATE_CARRY_STRIDE, **opts,
        )
        return dq, dk, dv, dg.to(log_decay.dtype), None, dh0, None, None


def _boundary_buffers(q, v, T, cu_seqlens):
    """fp32 states saved every GATE_CARRY_STRIDE tokens of each sequence (its end excluded), and for packed
    sequences the index of each sequence's first one."""
    H, K, V = q.shape[2], q.shape[3], v.shape[-1]
    if cu_seqlens is None:
        per_sequence = [max(T - 1, 0) // GATE_CARRY_STRIDE] * q.shape[0]
        offsets = None
    else:
        bounds = cu_seqlens.tolist()
        per_sequence = [max(e - b - 1, 0) // GATE_CARRY_STRIDE for b, e in zip(bounds[:-1], bounds[1:])]
        starts = [0]
        for count in per_sequence[:-1]:
            starts.append(starts[-1] + count)
        offsets = torch.tensor(starts, dtype=torch.int64, device=q.device)
    states = q.new_empty(max(sum(per_sequence), 1), H, K, V, dtype=torch.float32)
    return states, offsets


def _kernels_cover(q: torch.Tensor, v: torch.Tensor) -> bool:
    return q.dtype in _KERNEL_DTYPES and q.shape[-1] in SUPPORTED_DIMS and v.shape[-1] in SUPPORTED_DIMS


def _fallback(q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens):
    from decaylab.ops import BACKENDS

    fn = BACKENDS.get("chunk" if "chunk" in BACKENDS else "recurrent")
    if cu_seqlens is None:
        return fn(q, k, v, log_decay, scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    outputs, states = [], []
    bounds = cu_seqlens.tolist()
    for n, (bos, eos) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[n : n + 1]
        o, ht = fn(q[:, bos:eos], k[:, bos:eos], v[:, bos:eos], log_decay[:, bos:eos], scale=scale,
                   initial_state=h0, output_final_state=output_final_state)
        outputs.append(o)
        states.append(ht)
    return torch.cat(outputs, dim=1), (torch.cat(states) if output_final_state else None)


def _check_varlen(q: torch.Tensor, cu_seqlens: torch.Tensor, initial_state: torch.Tensor | None) -> None:
    if cu_seqlens.ndim != 1 or cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.numel() < 2:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32/int64 tensor [N+1] of sequence start offsets ending with the total "
            f"length (FlashAttention convention); got dtype {cu_seqlens.dtype}, shape {tuple(cu_seqlens.shape)}"
        )
    if q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens, pack the sequences into batch 1: q must be [1, sum T, H, K]; "
                         f"got batch {q.shape[0]}")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but q is on {q.device}")
    bounds = cu_seqlens.tolist()  # one small device sync; wrong offsets would read out of bounds
    if bounds[0] != 0 or bounds[-1] != q.shape[1] or any(b > e for b, e in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"cu_seqlens must start at 0, never decrease and end at T = {q.shape[1]}; got {bounds}")
    N, H, K = len(bounds) - 1, q.shape[2], q.shape[3]
    if initial_state is not None and (initial_state.ndim != 4 or tuple(initial_state.shape[:3]) != (N, H, K)):
        raise ValueError(
            f"with cu_seqlens, initial_state must be [N, H, K, V] with N = {N} sequences; "
            f"got {tuple(initial_state.shape)}"
        )


def chunk_decay_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked decayed linear attention on Triton kernels, differentiable in every input.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; float16, bfloat16 or float32 (one dtype).
        log_decay: ``[B, T, H]`` (scalar decay) or ``[B, T, H, K]`` (vector decay), values <= 0, any float dtype.
        scale: multiplies the output.
        initial_state: ``[N, H, K, V]`` float32 (N = B, or the number of packed sequences), or None for zeros.
        output_final_state: also return the ``[N, H, K, V]`` float32 state after each sequence's last token.
        cu_seqlens: optional ``[N+1]`` int tensor of packed-sequence offsets (FlashAttention convention); then
            B must be 1 and the N sequences are independent (states restart at every offset).

    Returns:
        ``(o, final_state)``: o ``[B, T, H, V]`` in the input dtype; final_state ``[N, H, K, V]`` or None.
    """
    if cu_seqlens is not None:
        _check_varlen(q, cu_seqlens, initial_state)
    if q.device.type != "cuda" and not interpreter_active():
        raise ValueError(
            f"the triton backend runs on CUDA tensors (got {q.device}); use backend='chunk' on CPU, or set "
            f"TRITON_INTERPRET=1 before importing triton to simulate the kernels"
        )
    if not _kernels_cover(q, v):
        return _fallback(q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens)
    state_dtype = None if initial_state is None else initial_state.dtype
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    o, ht = ChunkDecayAttentionFunction.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), log_decay.contiguous(), float(scale), initial_state,
        bool(output_final_state), cu_seqlens,
    )
    if ht is not None and state_dtype is not None and state_dtype != torch.float32:
        ht = ht.to(state_dtype)
    return o, ht
