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

from decaylab.ops.triton import blocks, gluon, kernels
from decaylab.ops.triton.chunk_parallel import chunk_parallel_backward, chunk_table, new_chunk_states
from decaylab.ops.triton.configs import SPAN_LIMIT, SUPPORTED_DIMS, active_config, interpreter_active
from decaylab.ops.triton.decode import decode_step
from decaylab.ops.triton.launch import launch_kernel
from decaylab.ops.triton.plans import ChunkParallelBackward, FusedDv, LaunchPlan, TwoSweepBackward
from decaylab.ops.triton.segments import plan_segments, segment_length, segment_states
from decaylab.ops.triton.two_sweeps import two_sweep_backward
from decaylab.ops.varlen import check_cu_seqlens, per_sequence

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
log = logging.getLogger("decaylab.ops")


def _dot_precision(q: torch.Tensor) -> str:
    """fp32 inputs: three tf32 tensor-core dots per product (near fp32's accuracy; an ``ieee`` dot is a loop of FMAs
    that takes 5x longer to compile at K = 128), except past K = 128, where tf32x3's split operands overflow a
    Hopper SM's shared memory. Half precisions: their fp32 intra-chunk operands in tf32."""
    if q.dtype != torch.float32:
        return "tf32"
    return "tf32x3" if q.shape[3] <= 128 else "ieee"


def _launch_options(q: torch.Tensor, log_decay: torch.Tensor, chunk: int, num_warps: int, num_stages: int,
                    adjacent: bool, max_registers: int) -> dict:
    return dict(
        H=q.shape[2], K=q.shape[3], BT=chunk, VECTOR=log_decay.ndim == 4,
        PREC=_dot_precision(q), ADJACENT=adjacent,
        num_warps=num_warps, num_stages=num_stages,
        **blocks.COMPILE_OPTIONS, **({"maxnreg": max_registers} if max_registers else {}),
    )


def _intra_options(q: torch.Tensor, precise: bool, exact: bool) -> dict:
    # fp16 cannot hold the vector fast path's 2^±50 split factors: those dots run on fp32 operands;
    # SPAN_LIMIT 0 builds the kernels without the exact path (LaunchPlan.exact_intra)
    return dict(SPAN_LIMIT=SPAN_LIMIT if exact else 0.0, INTRA_FP32=q.dtype != torch.bfloat16 or precise)


def _backward_options(q: torch.Tensor, log_decay: torch.Tensor, cfg: LaunchPlan) -> dict:
    """The launch options of the backward kernels (either strategy)."""
    backward = cfg.backward
    return dict(_launch_options(q, log_decay, cfg.backward_chunk, cfg.backward_num_warps, cfg.backward_num_stages,
                                cfg.blocks_adjacent, backward.max_registers),
                **_intra_options(q, backward.precise_intra, cfg.exact_intra), STRIDE=backward.gate_stride)


class ChunkDecayAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_decay, scale, initial_state, output_final_state, cu_seqlens, lengths, cfg, segments):
        T, H, K, V = q.shape[1], q.shape[2], q.shape[3], v.shape[-1]
        N = len(lengths)
        fwd = cfg.forward
        opts = dict(_launch_options(q, log_decay, fwd.chunk, fwd.num_warps, fwd.num_stages, cfg.blocks_adjacent,
                                    fwd.max_registers), **_intra_options(q, False, cfg.exact_intra))
        o = torch.empty_like(v)
        starts = decay = ends = None
        save = cfg.saves_states and any(ctx.needs_input_grad)
        chunk_states = first = None
        state_every = 1  # chunks per saved state
        if save:
            # states for the chunk-parallel backward (one per span of tokens), indexed per program (sequence or
            # segment): segments are whole spans, so both orders of the spans agree
            spans = chunk_table(lengths if segments is None else segments.lengths, cfg.state_span, q.device)
            chunk_states, first = new_chunk_states(q, v, spans.count), spans.first
            state_every = cfg.state_span // fwd.chunk
        BV = fwd.value_block_for(V)
        programs = (N if segments is None else segments.count) * H * (V // BV)
        forward_opts = dict(opts, num_stages=cfg.stages_for(programs, fwd.num_stages))
        if segments is None:
            ht = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
            _forward(q, k, v, log_decay, o, scale, initial_state, ht, cu_seqlens, chunk_states, first, T, N, cfg,
                     forward_opts, BV, state_every)
        else:
            # the two-sweep backward's gate gradient needs each segment's end state
            store_ends = any(ctx.needs_input_grad) and isinstance(cfg.backward, TwoSweepBackward)
            starts, ht, decay, ends = segment_states(k, v, log_decay, initial_state, segments, T, V, opts,
                                                     cfg.splitting, store_ends)
            _forward(q, k, v, log_decay, o, scale, starts, None, segments.cu_seqlens, chunk_states, first, T,
                     segments.count, cfg, forward_opts, BV, state_every)
        ctx.save_for_backward(q, k, v, log_decay, initial_state, ht, cu_seqlens, starts, decay, chunk_states, ends)
        ctx.scale, ctx.lengths, ctx.cfg, ctx.segments = scale, lengths, cfg, segments
        return o, (ht if output_final_state else None)

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, log_decay, initial_state, ht, cu_seqlens, starts, decay, chunk_states, ends = ctx.saved_tensors
        cfg = ctx.cfg
        opts = _backward_options(q, log_decay, cfg)
        do = do.contiguous()
        dht = None if dht is None else dht.float().contiguous()
        has_h0 = initial_state is not None
        if isinstance(cfg.backward, ChunkParallelBackward):
            dq, dk, dv, dg, dh0 = chunk_parallel_backward(q, k, v, log_decay, do, initial_state, dht, ctx.scale,
                                                          ctx.lengths, opts, cfg, chunk_states)
            dh0 = dh0 if has_h0 else None
        else:
            dq, dk, dv, dg, dh0 = two_sweep_backward(q, k, v, log_decay, do, initial_state, dht, ht, ctx.scale,
                                                     cu_seqlens, ctx.lengths, ctx.segments, starts, decay, ends, opts,
                                                     cfg)
        return dq, dk, dv, dg.to(log_decay.dtype), None, dh0, None, None, None, None, None


def _forward(q, k, v, log_decay, o, scale, h0, ht, cu_seqlens, states, first, T, count, cfg, opts, BV, state_every):
    """The forward kernel over ``count`` sequences or segments (bounds from cu_seqlens, or T apart): writes o, ht
    (if given) and the saved chunk states (if given)."""
    if gluon.covers(q, k, v, log_decay, cfg) and gluon.forward(q, k, v, log_decay, o, scale, h0, ht, cu_seqlens,
                                                               states, first, T, count, opts["num_stages"]):
        return
    H, V = q.shape[2], v.shape[3]
    launch_kernel(
        kernels.forward_kernel, blocks.launch_grid(count * H, V // BV, cfg.blocks_adjacent),
        q, k, v, log_decay, o, h0, ht, cu_seqlens, states, first, scale, T, V=V, BV=BV, VARLEN=cu_seqlens is not None,
        HAS_H0=h0 is not None, STORE_HT=ht is not None, SAVE_STATES=states is not None, STATE_EVERY=state_every,
        **opts,
    )


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    from decaylab.ops.backends import BACKENDS

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


def triton_decay_linear_attention(
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
    backward = cfg.backward
    if log_decay.ndim == 4 and isinstance(backward, ChunkParallelBackward) and backward.gluon_dqk:
        raise ValueError("hopper_dqk is the Gluon dq/dk kernel of the chunk-parallel backward, for scalar decay "
                         "([B, T, H] log decays) only; vector decay's chunk-parallel backward runs its Triton dq/dk "
                         "kernel: set hopper_dqk=False for vector decay")
    if isinstance(backward, ChunkParallelBackward) and isinstance(backward.dv, FusedDv) and \
            0 < backward.key_block < K:
        raise ValueError(f"fused_dv needs every key channel in one program, but bwd_key_block {backward.key_block} "
                         f"splits K = {K}: set bwd_key_block=0 or drop fused_dv")
    if q.device.type != "cuda" and not interpreter_active():
        raise ValueError(
            f"the triton backend runs on CUDA tensors (got {q.device}); use backend='chunk' on CPU, or set "
            f"TRITON_INTERPRET=1 before importing triton to simulate the kernels"
        )
    if not _kernels_cover(q, v):
        return _fallback(q, k, v, log_decay, scale, initial_state, output_final_state, bounds)
    if T == 1 and bounds is None and not _needs_grad(q, k, v, log_decay, initial_state):
        o, ht = decode_step(q, k, v, log_decay, scale, initial_state)  # one launch for a decoding step
        if initial_state is not None and initial_state.dtype != torch.float32:
            ht = ht.to(initial_state.dtype)
        return o, ht if output_final_state else None
    lengths = (T,) * B if bounds is None else tuple(e - b for b, e in zip(bounds[:-1], bounds[1:]))
    forward_blocks = v.shape[-1] // cfg.forward.value_block_for(v.shape[-1])
    split = cfg.splitting
    segment = split.segment or segment_length(lengths, H, split.split_below, split.target_programs,
                                              backward.gate_stride, forward_blocks)
    segments = plan_segments(lengths, segment, q.device) if segment and max(lengths) > segment else None
    state_dtype = None if initial_state is None else initial_state.dtype
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    o, ht = ChunkDecayAttentionFunction.apply(
        q.contiguous(), k.contiguous(), v.contiguous(), log_decay.contiguous(), float(scale), initial_state,
        bool(output_final_state), cu_seqlens, lengths, cfg, segments,
    )
    if ht is not None and state_dtype is not None and state_dtype != torch.float32:
        ht = ht.to(state_dtype)
    return o, ht
