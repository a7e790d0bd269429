"""The Triton backend's public function and its autograd wrapper.

    S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T,    o_t = scale * S_t^T q_t

Same signature as every ``decaylab.ops`` backend, plus ``cu_seqlens`` for packed variable-length sequences.
Inputs the kernels do not cover (head dims outside configs.SUPPORTED_DIMS, float64) are handed to the torch chunked
backend, one sequence at a time when packed.
"""

from __future__ import annotations

import functools
import logging

import torch
import triton

from decaylab.ops.triton import hopper, kernels
from decaylab.ops.triton.chunk_parallel import chunk_parallel_backward, chunk_table, new_chunk_states
from decaylab.ops.triton.configs import SPAN_LIMIT, SUPPORTED_DIMS, LaunchConfig, active_config, interpreter_active
from decaylab.ops.triton.segments import plan_segments, segment_length, segment_state_grads, segment_states
from decaylab.ops.varlen import check_cu_seqlens, per_sequence

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
log = logging.getLogger("decaylab.ops")


def _launch_options(q: torch.Tensor, log_decay: torch.Tensor, cfg: LaunchConfig, max_registers: int) -> dict:
    return dict(
        H=q.shape[2], K=q.shape[3], BT=cfg.chunk, VECTOR=log_decay.ndim == 4,
        PREC="ieee" if q.dtype == torch.float32 else "tf32", ADJACENT=cfg.blocks_adjacent,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        **kernels.COMPILE_OPTIONS, **({"maxnreg": max_registers} if max_registers else {}),
    )


def _intra_options(q: torch.Tensor, cfg: LaunchConfig, backward: bool) -> dict:
    # fp16 cannot hold the vector fast path's 2^±50 split factors: those dots run on fp32 operands
    return dict(SPAN_LIMIT=SPAN_LIMIT, INTRA_FP32=q.dtype != torch.bfloat16 or (backward and cfg.precise_intra))


class ChunkDecayAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens, lengths, cfg, plan):
        T, H, K, V = q.shape[1], q.shape[2], q.shape[3], v.shape[-1]
        N = len(lengths)
        opts = dict(_launch_options(q, log_decay, cfg, cfg.fwd_max_registers),
                    **_intra_options(q, cfg, backward=False))
        o = torch.empty_like(v)
        starts = decay = ends = None
        save = cfg.save_states and any(ctx.needs_input_grad)
        chunk_states = first = None
        state_every = 1  # chunks per saved state
        if save:
            # states for the chunk-parallel backward (one per span of tokens), indexed per program (sequence or
            # segment): segments are whole spans, so both orders of the spans agree
            spans = chunk_table(lengths if plan is None else plan.lengths, cfg.state_span, q.device)
            chunk_states, first = new_chunk_states(q, v, spans.count), spans.first
            state_every = cfg.state_span // cfg.chunk
        BV = cfg.forward_value_block(V)
        programs = (N if plan is None else plan.count) * H * (V // BV)
        forward_opts = dict(opts, num_stages=cfg.stages_for(programs, cfg.num_stages))
        if plan is None:
            ht = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
            _forward(q, k, v, log_decay, o, scale, initial_state, ht, cu_seqlens, chunk_states, first, T, N, cfg,
                     forward_opts, BV, state_every)
        else:
            # the two-sweep backward's gate gradient needs each segment's end state
            store_ends = any(ctx.needs_input_grad) and not cfg.chunk_parallel_backward
            starts, ht, decay, ends = segment_states(k, v, log_decay, initial_state, plan, T, V, opts, cfg,
                                                     store_ends)
            _forward(q, k, v, log_decay, o, scale, starts, None, plan.cu_seqlens, chunk_states, first, T, plan.count,
                     cfg, forward_opts, BV, state_every)
        ctx.save_for_backward(q, k, v, log_decay, initial_state, ht, cu_seqlens, starts, decay, chunk_states, ends)
        ctx.scale, ctx.lengths, ctx.cfg, ctx.plan = scale, lengths, cfg, plan
        return o, (ht if output_final_state else None)

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, log_decay, initial_state, ht, cu_seqlens, starts, decay, chunk_states, ends = ctx.saved_tensors
        T, H, K, V = q.shape[1], q.shape[2], q.shape[3], v.shape[-1]
        cfg, plan = ctx.cfg, ctx.plan
        N = len(ctx.lengths)
        vector = log_decay.ndim == 4
        opts = dict(_launch_options(q, log_decay, cfg.backward, cfg.bwd_max_registers),
                    **_intra_options(q, cfg, backward=True), STRIDE=cfg.gate_stride)
        do = do.contiguous()
        dht = None if dht is None else dht.float().contiguous()
        has_h0 = initial_state is not None
        if cfg.chunk_parallel_backward:
            dq, dk, dv, dg, dh0 = chunk_parallel_backward(q, k, v, log_decay, do, initial_state, dht, ctx.scale,
                                                          ctx.lengths, opts, cfg, chunk_states)
            return dq, dk, dv, dg.to(log_decay.dtype), None, dh0 if has_h0 else None, None, None, None, None, None
        if plan is None:
            programs, bounds, lengths, h_start = N, cu_seqlens, ctx.lengths, initial_state
            dh_end, h_end = dht, ht
        else:
            programs, bounds, lengths, h_start = plan.count, plan.cu_seqlens, plan.lengths, starts
            dh_end, dh0_all = segment_state_grads(q, log_decay, do, dht, decay, plan, ctx.scale, T, N, V, opts,
                                                       cfg)
            h_end = ends
        # The backward kernels split the key channels into NK blocks of BK (one program each): dv and, for
        # scalar decay, q*dq and the gate gradient are sums over key channels, so each block writes a partial.
        BK = min(K, cfg.bwd_key_block or K)
        NK = K // BK
        gate_parts = log_decay.shape if vector else (NK, *log_decay.shape)
        part_stride = 0 if vector else log_decay.numel()
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        partial_dtype = torch.bfloat16 if cfg.bf16_dv_partials and v.dtype == torch.bfloat16 else torch.float32
        dv = torch.empty_like(v) if NK == 1 else v.new_empty(NK, *v.shape, dtype=partial_dtype)
        qdq = q.new_empty(gate_parts, dtype=torch.float32)  # q * dq (summed over the block for scalar decay)
        dg = q.new_empty(gate_parts, dtype=torch.float32)
        varlen = bounds is not None
        states, boundary_offsets = _boundary_buffers(q, v, lengths, varlen, cfg.gate_stride,
                                                     torch.bfloat16 if cfg.bf16_boundaries else torch.float32)
        grid = kernels.launch_grid(programs * H, NK, cfg.blocks_adjacent)
        kernels.backward_dq_kernel[grid](
            q, k, v, log_decay, do, dq, qdq, h_start, states, boundary_offsets, bounds, ctx.scale, T, part_stride,
            V=V, BK=BK, VARLEN=varlen, HAS_H0=h_start is not None, **opts
        )
        store_dh0 = has_h0 and plan is None
        dh0 = torch.empty_like(initial_state) if store_dh0 else None
        kernels.backward_dkv_kernel[grid](
            q, k, v, log_decay, do, qdq, dk, dv, dg, dh_end, h_end, dh0, states, boundary_offsets, bounds,
            ctx.scale, T, part_stride, v.numel(), V=V, BK=BK, VARLEN=varlen, HAS_DHT=dh_end is not None,
            STORE_DH0=store_dh0, **opts,
        )
        if NK > 1:
            dv = _sum_partials(dv, v.dtype)
            if not vector:
                dg = dg.sum(0)
        if plan is not None and has_h0:
            dh0 = dh0_all
        return dq, dk, dv, dg.to(log_decay.dtype), None, dh0, None, None, None, None, None


def _forward(q, k, v, log_decay, o, scale, h0, ht, cu_seqlens, states, first, T, count, cfg, opts, BV, state_every):
    """The forward kernel over ``count`` sequences or segments (bounds from cu_seqlens, or T apart): writes o, ht
    (if given) and the saved chunk states (if given)."""
    if hopper.covers(q, k, v, log_decay, cfg) and hopper.forward(q, k, v, log_decay, o, scale, h0, ht, cu_seqlens,
                                                                 states, first, T, count, opts["num_stages"]):
        return
    H, V = q.shape[2], v.shape[3]
    kernels.forward_kernel[kernels.launch_grid(count * H, V // BV, cfg.blocks_adjacent)](
        q, k, v, log_decay, o, h0, ht, cu_seqlens, states, first, scale, T, V=V, BV=BV, VARLEN=cu_seqlens is not None,
        HAS_H0=h0 is not None, STORE_HT=ht is not None, SAVE_STATES=states is not None, STATE_EVERY=state_every,
        **opts,
    )


def _sum_partials(parts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sum partials [NP, *shape] over NP in fp32 and cast, in one kernel: torch's sum then cast makes two passes
    and an fp32 intermediate."""
    out = torch.empty(parts.shape[1:], dtype=dtype, device=parts.device)
    M, block = out.numel(), 4096
    kernels.sum_partials_kernel[(triton.cdiv(M, block),)](parts, out, M, NP=parts.shape[0], BLOCK=block, num_warps=8,
                                                        **kernels.COMPILE_OPTIONS)
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


def _kernels_cover(q: torch.Tensor, v: torch.Tensor) -> bool:
    return q.dtype in _KERNEL_DTYPES and q.shape[-1] in SUPPORTED_DIMS and v.shape[-1] in SUPPORTED_DIMS


@functools.lru_cache(maxsize=None)
def _warn_fallback(dtype: torch.dtype, K: int, V: int) -> None:
    """Once per (dtype, K, V): say that these inputs run on the torch chunked backend, not the kernels."""
    log.warning(
        "triton backend: %s inputs with head dims K=%d, V=%d are outside the kernels (float16/bfloat16/float32, "
        "head dims %s); running the torch chunked backend instead (correct, but much slower on a GPU)",
        dtype, K, V, "/".join(map(str, SUPPORTED_DIMS)),
    )


def _fallback(q, k, v, log_decay, scale, initial_state, output_final_state, bounds):
    from decaylab.ops import BACKENDS

    _warn_fallback(q.dtype, q.shape[-1], v.shape[-1])
    fn = BACKENDS.get("chunk" if "chunk" in BACKENDS else "recurrent")
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if bounds is None:
        return fn(q, k, v, log_decay, **kwargs)
    return per_sequence(lambda _: fn, bounds, q, k, v, log_decay, **kwargs)


def _check_varlen(q: torch.Tensor, cu_seqlens: torch.Tensor, initial_state: torch.Tensor | None) -> list[int]:
    """Validate packed-sequence offsets (the checks every backend shares, plus the kernels' own); return them as
    a list."""
    if isinstance(cu_seqlens, torch.Tensor) and cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but q is on {q.device}")
    bounds = check_cu_seqlens(cu_seqlens, q)  # one small device sync; wrong offsets would read out of bounds
    N, H, K = len(bounds) - 1, q.shape[2], q.shape[3]
    if initial_state is not None and (initial_state.ndim != 4 or tuple(initial_state.shape[:3]) != (N, H, K)):
        raise ValueError(
            f"with cu_seqlens, initial_state must be [N, H, K, V] with N = {N} sequences; "
            f"got {tuple(initial_state.shape)}"
        )
    return bounds


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
    B, T, H, K = q.shape
    bounds = None if cu_seqlens is None else _check_varlen(q, cu_seqlens, initial_state)
    cfg = active_config(q.device, log_decay.ndim == 4, K, v.shape[-1])
    if log_decay.ndim == 4 and cfg.chunk_parallel_backward:
        raise ValueError("LaunchConfig.chunk_parallel_backward is for scalar decay ([B, T, H] log decays); vector "
                         "decay takes the default backward: leave it False for vector decay")
    if cfg.fused_dv and 0 < cfg.bwd_key_block < K:
        raise ValueError(f"LaunchConfig.fused_dv needs every key channel in one program, but bwd_key_block "
                         f"{cfg.bwd_key_block} splits K = {K}: set bwd_key_block=0 or drop fused_dv")
    if q.device.type != "cuda" and not interpreter_active():
        raise ValueError(
            f"the triton backend runs on CUDA tensors (got {q.device}); use backend='chunk' on CPU, or set "
            f"TRITON_INTERPRET=1 before importing triton to simulate the kernels"
        )
    if not _kernels_cover(q, v):
        return _fallback(q, k, v, log_decay, scale, initial_state, output_final_state, bounds)
    lengths = (T,) * B if bounds is None else tuple(e - b for b, e in zip(bounds[:-1], bounds[1:]))
    forward_blocks = v.shape[-1] // cfg.forward_value_block(v.shape[-1])
    segment = cfg.segment or segment_length(lengths, H, cfg.split_below, cfg.target_programs, cfg.gate_stride,
                                            forward_blocks)
    plan = plan_segments(lengths, segment, q.device) if segment and max(lengths) > segment else None
    state_dtype = None if initial_state is None else initial_state.dtype
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    o, ht = ChunkDecayAttentionFunction.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), log_decay.contiguous(), float(scale), initial_state,
        bool(output_final_state), cu_seqlens, lengths, cfg, plan,
    )
    if ht is not None and state_dtype is not None and state_dtype != torch.float32:
        ht = ht.to(state_dtype)
    return o, ht
