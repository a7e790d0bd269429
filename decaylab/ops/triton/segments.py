"""Sequence splitting: run long sequences as several independent segments so that few (sequence, head) pairs
still fill the GPU.

The chunk kernels give one program to one (sequence, head) and walk its chunks in order, so B*H programs is all
the parallelism there is (64 at B4*H16 on a 132-SM card). Cutting each sequence into segments, the main kernels
run one program per (segment, head), given each segment's true boundary state:

    forward:   local_s  = the state segment s builds from zero,   d_s = its total log2 decay
               start_0  = h0,   start_{s+1} = 2^d_s * start_s + local_s      (a short scan over segments)
    backward:  dlocal_s = the state gradient segment s sends to its start from zero at its end
               end_last = dh_T, end_{s-1} = 2^d_s * end_s + dlocal_s,   dh0 = 2^d_0 * end_0 + dlocal_0

With those, a segment is just a packed sequence (cu_seqlens) with an initial state and a final-state gradient,
which the chunk kernels already take. The extra cost is one state-only sweep in each direction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from decaylab.ops.triton.blocks import COMPILE_OPTIONS, advance_block, block_ptrs, chunk_tokens, compile_options, \
    launch_grid, retreat_block, sequence_bounds, state_block_ids
from decaylab.ops.triton.launch import launch_kernel
from decaylab.ops.triton.plans import Splitting


@dataclass(frozen=True)
class SegmentPlan:
    """Segments of the packed token axis, in order; each sequence owns a consecutive run of them."""

    cu_seqlens: torch.Tensor  # [S + 1] int64: segment bounds in packed tokens
    first: torch.Tensor  # [N + 1] int64: index of each sequence's first segment (first[N] = S)
    lengths: tuple[int, ...]  # S segment lengths

    @property
    def count(self) -> int:
        return len(self.lengths)


@functools.lru_cache(maxsize=64)
def plan_segments(lengths: tuple[int, ...], segment: int, device: torch.device) -> SegmentPlan:
    """Cut each sequence (lengths in packed order) into pieces of ``segment`` tokens; an empty or short sequence
    keeps one segment. Cached: a training loop repeats its shapes, and building the plan copies index tensors to
    the device, a copy that would stall the host until the GPU queue drains."""
    pieces, first = [], [0]
    for length in lengths:
        count = max(1, math.ceil(length / segment))
        pieces += [min(segment, length - i * segment) for i in range(count)]
        first.append(first[-1] + count)
    bounds = [0]
    for piece in pieces:
        bounds.append(bounds[-1] + piece)
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
    return SegmentPlan(as_tensor(bounds), as_tensor(first), tuple(pieces))


# A sequence longer than this many even shares of the work is split even when there are programs enough: its one
# program would run long after the others have finished (one long document packed among short ones).
IMBALANCE = 4


def segment_length(lengths: tuple[int, ...], heads: int, split_below: int, target_programs: int, stride: int,
                   blocks: int = 1) -> int:
    """Segment length (a multiple of ``stride``), 0 to leave the sequences whole. When the whole sequences give the
    forward fewer than ``split_below`` programs (sequence x head x its ``blocks`` value blocks): the longest
    sequence cut into as many pieces as keep the (segment, head) programs within ``target_programs`` (the programs
    the GPU runs at once: one more would start a second round, which costs a whole segment's time; measured on an
    H200, docs/benchmarks-log.md). Otherwise only when the longest sequence exceeds IMBALANCE times an even share of
    the tokens, spread over ``target_programs`` programs but over no more than IMBALANCE per (sequence, head) (so
    that equal lengths never take this rule): that share."""
    if not lengths or not split_below or not target_programs:
        return 0
    longest = max(lengths)
    programs = len(lengths) * heads
    if programs * blocks < split_below:
        length = longest / max(1, target_programs // programs)
    else:
        length = sum(lengths) * heads / min(target_programs, IMBALANCE * programs)
        if longest <= IMBALANCE * length:
            return 0
    length = max(stride, math.ceil(length / stride) * stride)
    return length if length < longest else 0


@triton.jit
def segment_state_kernel(k, v, g, local, decay, cu_seqlens, T,
                         H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                         BV: tl.constexpr, VECTOR: tl.constexpr, PREC: tl.constexpr, ADJACENT: tl.constexpr):
    """Per (segment, head, [BK, BV] state block): the block built from zero over the segment; the programs of the
    first value block also store the segment's total log2 decay (of their key channels)."""
    i_nh, i_k, i_v = state_block_ids(K, V, BK, BV, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, True)
    DT = k.dtype.element_ty
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if VECTOR:
        total = tl.zeros([BK], dtype=tl.float32)
    else:
        total = tl.zeros([], dtype=tl.float32)
    for i_t in range(0, tl.cdiv(seq_len, BT)):
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        S, G_last = advance_block(S, k, v, g, tok, valid, i_h, i_k, i_v, H, K, V, BK, BV, VECTOR, DT, PREC)
        total += G_last
    tl.store(block_ptrs(local, i_nh, K, V, BK, BV, i_k, i_v), S)
    if i_v == 0:  # one store per key block
        if VECTOR:
            tl.store(decay + i_nh.to(tl.int64) * K + i_k * BK + tl.arange(0, BK), total)
        else:
            if i_k == 0:
                tl.store(decay + i_nh, total)


@triton.jit
def segment_dstate_kernel(q, g, do, dlocal, cu_seqlens, scale, T,
                          H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                          BV: tl.constexpr, VECTOR: tl.constexpr, PREC: tl.constexpr, ADJACENT: tl.constexpr):
    """Per (segment, head, [BK, BV] state block): the block's gradient at the segment start from the segment's
    own outputs alone."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_nh, i_k, i_v = state_block_ids(K, V, BK, BV, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, True)
    DT = q.dtype.element_ty
    dS = tl.zeros([BK, BV], dtype=tl.float32)
    NT = tl.cdiv(seq_len, BT)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        dS = retreat_block(dS, q, do, g, scale, tok, valid, i_h, i_k, i_v, H, K, V, BK, BV, VECTOR, DT, PREC)
    tl.store(block_ptrs(dlocal, i_nh, K, V, BK, BV, i_k, i_v), dS)


@triton.jit
def segment_scan_kernel(first, init, local, decay, boundary, after, final,
                        H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                        VECTOR: tl.constexpr, HAS_INIT: tl.constexpr, REVERSE: tl.constexpr,
                        STORE_AFTER: tl.constexpr):
    """Per (sequence, head, [BK, BV] state block), over its segments in order (REVERSE: backwards): store the
    running value as the segment's boundary value, then X <- 2^decay * X + local. Forward this turns local states
    into segment start states and the final state; reversed it turns local state gradients into segment-end
    gradients and dh0. With STORE_AFTER the value after each segment is stored too (forward: its end state). Every
    state element scans alone (the decay acts per row), so blocks give the parallelism that B*H alone lacks: that
    is why the sequences were segmented in the first place."""
    i_nh, i_k, i_v = state_block_ids(K, V, BK, BV, False)  # a 2-D grid: no tiles shared between blocks
    i_n, i_h = i_nh // H, i_nh % H
    s_begin = tl.load(first + i_n)
    count = tl.load(first + i_n + 1) - s_begin
    X = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_INIT:
        X = tl.load(block_ptrs(init, i_nh, K, V, BK, BV, i_k, i_v))
    for j in range(0, count):
        if REVERSE:
            seg = s_begin + count - 1 - j
        else:
            seg = s_begin + j
        i_sh = seg * H + i_h
        tl.store(block_ptrs(boundary, i_sh, K, V, BK, BV, i_k, i_v), X)
        if VECTOR:
            X = X * tl.exp2(tl.load(decay + i_sh * K + i_k * BK + tl.arange(0, BK)))[:, None]
        else:
            X = X * tl.exp2(tl.load(decay + i_sh))
        X += tl.load(block_ptrs(local, i_sh, K, V, BK, BV, i_k, i_v))
        if STORE_AFTER:
            tl.store(block_ptrs(after, i_sh, K, V, BK, BV, i_k, i_v), X)
    tl.store(block_ptrs(final, i_nh, K, V, BK, BV, i_k, i_v), X)


def _scan(first, init, local, decay, boundary, final, vector: bool, reverse: bool, after=None):
    """Launch the segment scan over (sequence, head) x state blocks of at most 32 x 32."""
    N, H, K, V = final.shape
    BK, BV = min(K, 32), min(V, 32)
    launch_kernel(
        segment_scan_kernel, (N * H, (K // BK) * (V // BV)),
        first, init, local, decay, boundary, after, final, H=H, K=K, V=V, BK=BK, BV=BV, VECTOR=vector,
        HAS_INIT=init is not None, REVERSE=reverse, STORE_AFTER=after is not None, num_warps=1, **COMPILE_OPTIONS,
    )


# Host side: the sweeps and scans around the main kernels (function.py calls these).


def _sweep_launch(opts: dict, segments: int, V: int, chunk: int, block: int) -> tuple[tuple[int, ...], dict]:
    """Grid and launch options of a state-only sweep: the main kernels' precision and warps, ``chunk`` tokens per
    step (0: the main kernels' chunk), state blocks of ``block`` rows and columns (0: the whole state)."""
    K = opts["K"]
    BK, BV = min(K, block or K), min(V, block or V)
    grid = launch_grid(segments * opts["H"], (K // BK) * (V // BV), opts["ADJACENT"])
    names = ("H", "K", "VECTOR", "PREC", "ADJACENT", "num_warps", "num_stages")
    return grid, dict({name: opts[name] for name in names}, BT=chunk or opts["BT"], V=V, BK=BK, BV=BV,
                      **compile_options(opts))


def segment_states(k, v, log_decay, initial_state, plan: SegmentPlan, T, V, opts, splitting: Splitting,
                   store_ends: bool = False):
    """Each segment's start state, the sequences' final states, each segment's total log2 decay, and with
    ``store_ends`` each segment's end state (else None), which the backward's gate gradient needs."""
    H, K = k.shape[2], k.shape[3]
    N = plan.first.numel() - 1
    local = k.new_empty(plan.count, H, K, V, dtype=torch.float32)
    decay = k.new_empty(plan.count, *log_decay.shape[2:], dtype=torch.float32)  # [S, H] or [S, H, K]
    grid, launch = _sweep_launch(opts, plan.count, V, splitting.sweep_chunk, splitting.sweep_block)
    launch_kernel(segment_state_kernel, grid, k, v, log_decay, local, decay, plan.cu_seqlens, T, **launch)
    starts = torch.empty_like(local)
    final = k.new_empty(N, H, K, V, dtype=torch.float32)
    ends = torch.empty_like(local) if store_ends else None
    _scan(plan.first, initial_state, local, decay, starts, final, opts["VECTOR"], reverse=False, after=ends)
    return starts, final, decay, ends


def segment_state_grads(q, log_decay, do, dht, decay, plan: SegmentPlan, scale, T, N, V, opts,
                        splitting: Splitting):
    """The state gradient at each segment's end, and dh0 (the gradient at each sequence's start)."""
    H, K = q.shape[2], q.shape[3]
    dlocal = q.new_empty(plan.count, H, K, V, dtype=torch.float32)
    grid, launch = _sweep_launch(opts, plan.count, V, splitting.sweep_chunk, splitting.sweep_block)
    launch_kernel(segment_dstate_kernel, grid, q, log_decay, do, dlocal, plan.cu_seqlens, scale, T, **launch)
    ends = torch.empty_like(dlocal)
    dh0 = q.new_empty(N, H, K, V, dtype=torch.float32)
    _scan(plan.first, dht, dlocal, decay, ends, dh0, opts["VECTOR"], reverse=True)
    return ends, dh0
