"""Host side of the two-sweep backward (kernels.py's backward_dq_kernel and backward_dkv_kernel): vector decay's
backward, and scalar decay's low-memory option (TwoSweepBackward)."""

from __future__ import annotations

import functools

import torch
import triton

from decaylab.ops.triton import blocks, kernels
from decaylab.ops.triton.launch import launch_kernel
from decaylab.ops.triton.plans import LaunchPlan
from decaylab.ops.triton.segments import SegmentPlan, segment_state_grads


def two_sweep_backward(q, k, v, log_decay, do, initial_state, dht, ht, scale, cu_seqlens, lengths: tuple[int, ...],
                       segments: SegmentPlan | None, starts, decay, ends, opts: dict, cfg: LaunchPlan):
    """(dq, dk, dv, dlog_decay in fp32, dh0 or None) for the sequences (``cu_seqlens``/``lengths``), or their
    ``segments`` with the forward's segment ``starts``, total ``decay`` and ``ends`` states; ``opts`` the backward
    launch options."""
    T, H, K, V = q.shape[1], q.shape[2], q.shape[3], v.shape[-1]
    backward = cfg.backward
    N = len(lengths)
    vector = log_decay.ndim == 4
    has_h0 = initial_state is not None
    if segments is None:
        programs, bounds, h_start = N, cu_seqlens, initial_state
        dh_end, h_end = dht, ht
    else:
        programs, bounds, lengths, h_start = segments.count, segments.cu_seqlens, segments.lengths, starts
        dh_end, dh0_all = segment_state_grads(q, log_decay, do, dht, decay, segments, scale, T, N, V, opts,
                                              cfg.splitting)
        h_end = ends
    # The backward kernels split the key channels into NK blocks of BK (one program each): dv and, for
    # scalar decay, q*dq and the gate gradient are sums over key channels, so each block writes a partial.
    BK = min(K, backward.key_block or K)
    NK = K // BK
    gate_parts = log_decay.shape if vector else (NK, *log_decay.shape)
    part_stride = 0 if vector else log_decay.numel()
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    partial_dtype = torch.bfloat16 if backward.bf16_dv_partials and v.dtype == torch.bfloat16 else torch.float32
    dv = torch.empty_like(v) if NK == 1 else v.new_empty(NK, *v.shape, dtype=partial_dtype)
    qdq = q.new_empty(gate_parts, dtype=torch.float32)  # q * dq (summed over the block for scalar decay)
    dg = q.new_empty(gate_parts, dtype=torch.float32)
    varlen = bounds is not None
    states, boundary_offsets = _boundary_buffers(q, v, lengths, varlen, backward.gate_stride,
                                                 torch.bfloat16 if backward.bf16_boundaries else torch.float32)
    grid = blocks.launch_grid(programs * H, NK, cfg.blocks_adjacent)
    launch_kernel(
        kernels.backward_dq_kernel, grid,
        q, k, v, log_decay, do, dq, qdq, h_start, states, boundary_offsets, bounds, scale, T, part_stride,
        V=V, BK=BK, VARLEN=varlen, HAS_H0=h_start is not None, **opts
    )
    store_dh0 = has_h0 and segments is None
    dh0 = torch.empty_like(initial_state) if store_dh0 else None
    launch_kernel(
        kernels.backward_dkv_kernel, grid,
        q, k, v, log_decay, do, qdq, dk, dv, dg, dh_end, h_end, dh0, states, boundary_offsets, bounds,
        scale, T, part_stride, v.numel(), V=V, BK=BK, VARLEN=varlen, HAS_DHT=dh_end is not None,
        STORE_DH0=store_dh0, **opts,
    )
    if NK > 1:
        dv = _sum_partials(dv, v.dtype)
        if not vector:
            dg = dg.sum(0)
    if segments is not None and has_h0:
        dh0 = dh0_all
    return dq, dk, dv, dg, dh0


def _sum_partials(parts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sum partials [NP, *shape] over NP in fp32 and cast, in one kernel: torch's sum then cast makes two passes
    and an fp32 intermediate."""
    out = torch.empty(parts.shape[1:], dtype=dtype, device=parts.device)
    M, block = out.numel(), 4096
    launch_kernel(kernels.sum_partials_kernel, (triton.cdiv(M, block),), parts, out, M, NP=parts.shape[0], BLOCK=block,
                  num_warps=8, **blocks.COMPILE_OPTIONS)
    return out


def _boundary_buffers(q, v, lengths: tuple[int, ...], varlen: bool, stride: int, dtype: torch.dtype):
    """States saved every ``stride`` tokens of each sequence (its end excluded), and for packed sequences the
    index of each sequence's first one."""
    H, K, V = q.shape[2], q.shape[3], v.shape[-1]
    total, offsets = _boundary_offsets(lengths, stride, q.device if varlen else None)
    return q.new_empty(max(total, 1), H, K, V, dtype=dtype), offsets


@functools.lru_cache(maxsize=64)
def _boundary_offsets(lengths: tuple[int, ...], stride: int, device: torch.device | None):
    """(number of saved states, index of each sequence's first one on ``device``, or None without a device).
    Cached for the same reason as the segment plans: no host-to-device copy per call."""
    per_sequence = [max(length - 1, 0) // stride for length in lengths]
    if device is None:
        return sum(per_sequence), None
    starts = [0]
    for count in per_sequence[:-1]:
        starts.append(starts[-1] + count)
    return sum(per_sequence), torch.tensor(starts, dtype=torch.int64, device=device)
