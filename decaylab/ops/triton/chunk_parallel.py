"""Chunk-parallel backward (scalar decay's pinned one; vector decay's by choice): lean state sweeps, then one
program per (chunk, head).

The two-sweep backward (kernels.py, vector decay's pinned one) walks every chunk twice in order, each program
carrying a [K, V] state and a dozen tiles. Here the sequential work shrinks to the state recurrences alone, and the rest runs
in parallel:

    1. forward sweep:  h_c = state entering chunk c  (stored per chunk; skipped when the forward saved them)
    2. reverse sweep:  dh_c = state gradient leaving chunk c  (stored per chunk), and dh0
    3. per chunk:      dq = scale * 2^G (do h_c^T) + (dA * D) k          dA = scale * do v^T, D_ij = 2^(G_i - G_j)
                       dk = 2^(G_last - G) (v dh_c^T) + (dA * D)^T q
                       dv = A^T do + (k * 2^(G_last - G)) dh_c           A = scale * (q k^T) * D
                       dlog_decay = suffix sums of q.dq - k.dk in the chunk, plus sum(S_end * dh_c)

The gate gradient restarts from its direct form sum(S_end * dh_c) at every chunk end (S_end: the state leaving
the chunk, rebuilt from h_c and the chunk's keys and values), so no scan crosses chunks. The stored states cost
2 x K x V values per chunk and head.

Vector decay (a decay per key channel) takes the same kernels and launches under VECTOR: its G is a [BT, K] tile,
its factors are element-wise, and its per-chunk dq, dk and gate gradient are chunk_parallel_vector.py's.

With scalar or vector decay every element of the state evolves on its own, so the sweeps split the state into
[STATE_BLOCK, STATE_BLOCK] blocks, one program each: more programs in flight, and a small fp32 block in registers.
Step 3 is two kernels, so that neither holds more tiles than fit in registers: one for dv, one for dq, dk and the
gate gradient (optionally split over key blocks, whose gate-gradient shares are summed); with small heads one
kernel can do both (fused_dv), or the reverse sweep can compute dv on its way (dv_in_sweep, with one stored
state per chunk), reading q, k and do once for both. The gradient kernels walk the value channels in blocks of
BV: dv of a block needs only that block, while dq, dk and dA sum over blocks in fp32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from decaylab.ops.triton import gluon
from decaylab.ops.triton.configs import interpreter_active
from decaylab.ops.triton.intra import scalar_pair_decay
from decaylab.ops.triton.launch import launch_kernel
from decaylab.ops.triton.blocks import STATE_BLOCK, advance_block, block_ptrs, chunk_tokens, chunk_value_sums, \
    compile_options, decay_rows, dstate_at, launch_grid, load_chunk, load_gates, load_raw_gates, load_tile, \
    log2_cumsum, program_ids, retreat_block, retreat_dstate, sequence_bounds, state_block_ids, store_tile
from decaylab.ops.triton.chunk_parallel_vector import chunk_dqk_span_vector, vector_dv_operands
from decaylab.ops.triton.plans import ChunkParallelBackward, DvInSweep, DvKernel, FusedDv, LaunchPlan

SWEEP_WARPS = 4


@dataclass(frozen=True)
class ChunkTable:
    """Chunks of every sequence, in packed order: chunk c covers tokens [bos[c], end[c])."""

    cu_seqlens: torch.Tensor  # [N + 1] int64: sequence bounds in packed tokens
    first: torch.Tensor  # [N + 1] int64: index of each sequence's first chunk
    bos: torch.Tensor  # [C] int64
    end: torch.Tensor  # [C] int64
    count: int


@functools.lru_cache(maxsize=64)
def chunk_table(lengths: tuple[int, ...], chunk: int, device: torch.device) -> ChunkTable:
    """Cached per shape: building it copies index tensors to the device."""
    bounds, first, bos, end = [0], [0], [], []
    for length in lengths:
        start = bounds[-1]
        pieces = -(-length // chunk)
        for i in range(pieces):
            bos.append(start + i * chunk)
            end.append(start + min(length, (i + 1) * chunk))
        bounds.append(start + length)
        first.append(first[-1] + pieces)
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
    return ChunkTable(as_tensor(bounds), as_tensor(first), as_tensor(bos), as_tensor(end), len(bos))


@triton.jit
def chunk_states_kernel(k, v, g, h0, states, cu_seqlens, first, T,
                        H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                        BV: tl.constexpr, HAS_H0: tl.constexpr, VECTOR: tl.constexpr, PREC: tl.constexpr,
                        ADJACENT: tl.constexpr):
    """Per (sequence, head, state block): the block entering each chunk."""
    i_nh, i_k, i_v = state_block_ids(K, V, BK, BV, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, True)
    c0 = tl.load(first + i_n)
    DT = k.dtype.element_ty
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        S = tl.load(block_ptrs(h0, i_nh, K, V, BK, BV, i_k, i_v))
    for i_t in range(0, tl.cdiv(seq_len, BT)):
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        tl.store(block_ptrs(states, (c0 + i_t) * H + i_h, K, V, BK, BV, i_k, i_v), S.to(states.dtype.element_ty))
        S, _ = advance_block(S, k, v, g, tok, valid, i_h, i_k, i_v, H, K, V, BK, BV, VECTOR, DT, PREC)


@triton.jit
def chunk_dstates_kernel(q, g, do, dht, dstates, dh0, cu_seqlens, first, scale, T,
                         H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                         BV: tl.constexpr, HAS_DHT: tl.constexpr, VECTOR: tl.constexpr, PREC: tl.constexpr,
                         ADJACENT: tl.constexpr):
    """Per (sequence, head, state block): the block's gradient leaving each chunk, and entering the sequence."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_nh, i_k, i_v = state_block_ids(K, V, BK, BV, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, True)
    c0 = tl.load(first + i_n)
    DT = q.dtype.element_ty
    dS = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        dS = tl.load(block_ptrs(dht, i_nh, K, V, BK, BV, i_k, i_v))
    NT = tl.cdiv(seq_len, BT)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        tl.store(block_ptrs(dstates, (c0 + i_t) * H + i_h, K, V, BK, BV, i_k, i_v),
                 dS.to(dstates.dtype.element_ty))
        dS = retreat_block(dS, q, do, g, scale, tok, valid, i_h, i_k, i_v, H, K, V, BK, BV, VECTOR, DT, PREC)
    tl.store(block_ptrs(dh0, i_nh, K, V, BK, BV, i_k, i_v), dS)


@triton.jit
def _scores_t(q_t, k_t, D, scale, DT: tl.constexpr, PREC: tl.constexpr):
    """At = (scale * (q k^T) * D)^T, the first operand of the chunk's dv = At do + k_end dh."""
    return tl.trans(tl.dot(q_t, tl.trans(k_t), input_precision=PREC) * D * scale).to(DT)


@triton.jit
def _keys_to_end(k_t, G, DT: tl.constexpr):
    """k_end = k * 2^(G_last - G), the second operand of dv (the keys decayed to the chunk end)."""
    return (k_t * tl.exp2(tl.min(G, axis=0) - G)[:, None]).to(DT)


@triton.jit
def _dv_operands(q_t, k_t, G, D, scale, DT: tl.constexpr, PREC: tl.constexpr):
    return _scores_t(q_t, k_t, D, scale, DT, PREC), _keys_to_end(k_t, G, DT)


@triton.jit
def chunk_dv_kernel(q, k, g, do, dstates, chunk_bos, chunk_end, dv, scale,
                    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                    SUB: tl.constexpr, VECTOR: tl.constexpr, SPAN_LIMIT: tl.constexpr, INTRA_FP32: tl.constexpr,
                    PREC: tl.constexpr):
    """Per (span, head), for each of its SUB chunks of BT tokens: dv = A^T do + (k * 2^(G_last - G)) dh, walking
    the value channels in blocks of BV; dh, the state gradient leaving the chunk, is rebuilt from the span's."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_ch = tl.program_id(0)
    i_c, i_h = i_ch // H, i_ch % H
    DT = q.dtype.element_ty
    span_bos, span_end = tl.load(chunk_bos + i_c), tl.load(chunk_end + i_c)
    rows = tl.arange(0, BT)
    for j in tl.static_range(SUB):
        tok, valid = chunk_tokens(span_bos, span_end - span_bos, j, BT)
        q_t = load_chunk(q, tok, valid, i_h, H, K)
        k_t = load_chunk(k, tok, valid, i_h, H, K)
        G = load_gates(g, tok, valid, i_h, H, K, K, 0, VECTOR)  # [BT] or [BT, K], log2 units
        if VECTOR:
            At, k_end = vector_dv_operands(q_t, k_t, G, rows, scale, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
        else:
            At, k_end = _dv_operands(q_t, k_t, G, scalar_pair_decay(G, rows, rows), scale, DT, PREC)
        for i_v in range(0, V // BV):
            do_b = load_tile(do, tok, valid, i_h, H, V, BV, i_v)
            dh_b = tl.load(block_ptrs(dstates, i_ch, K, V, K, BV, 0, i_v)).to(tl.float32)  # leaving the span
            dh_b = dstate_at(dh_b, q, do, g, span_bos, span_end, scale, i_h, 0, i_v, H, K, V, BT, K, BV, j, SUB,
                             VECTOR, DT, PREC)
            dv_b = tl.dot(At, do_b, input_precision=PREC) + tl.dot(k_end, dh_b.to(DT), input_precision=PREC)
            store_tile(dv, dv_b, tok, valid, i_h, H, V, BV, i_v)


@triton.jit
def chunk_dstates_dv_kernel(q, k, g, do, dht, dstates, dh0, dv, cu_seqlens, first, scale, T,
                            H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
                            HAS_DHT: tl.constexpr, VECTOR: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                            INTRA_FP32: tl.constexpr, PREC: tl.constexpr, ADJACENT: tl.constexpr):
    """Per (sequence, head, value block): the reverse sweep of chunk_dstates_kernel over [K, BV] blocks (every key
    at once), computing each chunk's dv on the way, as chunk_dv_kernel would: q, k and do are read once for both
    and the state gradients are not read back. One stored state per chunk (no sub-chunks)."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_nh, i_v = program_ids(V // BV, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, True)
    c0 = tl.load(first + i_n)
    DT = q.dtype.element_ty
    rows = tl.arange(0, BT)
    dS = tl.zeros([K, BV], dtype=tl.float32)
    if HAS_DHT:
        dS = tl.load(block_ptrs(dht, i_nh, K, V, K, BV, 0, i_v))
    NT = tl.cdiv(seq_len, BT)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        tl.store(block_ptrs(dstates, (c0 + i_t) * H + i_h, K, V, K, BV, 0, i_v), dS.to(dstates.dtype.element_ty))
        q_t = load_chunk(q, tok, valid, i_h, H, K)
        k_t = load_chunk(k, tok, valid, i_h, H, K)
        do_b = load_tile(do, tok, valid, i_h, H, V, BV, i_v)
        G = load_gates(g, tok, valid, i_h, H, K, K, 0, VECTOR)  # [BT] or [BT, K], log2 units
        G_last = tl.min(G, axis=0)
        # dv = A^T do + 2^(G_last - G) * (k dS), one term at a time: their operands are never live together (this
        # kernel is the backward's most crowded: a [K, BV] fp32 state gradient besides the chunk's full-width q, k)
        if VECTOR:
            At, _ = vector_dv_operands(q_t, k_t, G, rows, scale, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
            dv_b = tl.dot(At, do_b, input_precision=PREC)
            # one decay per key channel: it goes on the keys, the dot's inner dimension
            dv_b += tl.dot(decay_rows(k_t, G_last - G, True).to(DT), dS.to(DT), input_precision=PREC)
        else:
            dv_b = tl.dot(_scores_t(q_t, k_t, scalar_pair_decay(G, rows, rows), scale, DT, PREC), do_b,
                          input_precision=PREC)
            # the keys' decay to the chunk end scales the product's rows: k feeds the dot straight from shared memory
            dv_b += tl.dot(k_t, dS.to(DT), input_precision=PREC) * tl.exp2(G_last - G)[:, None]
        store_tile(dv, dv_b, tok, valid, i_h, H, V, BV, i_v)
        dS = retreat_dstate(dS, q_t, do_b, G, G_last, scale, VECTOR, DT, PREC)
    tl.store(block_ptrs(dh0, i_nh, K, V, K, BV, 0, i_v), dS)


@triton.jit
def chunk_dqk_kernel(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, part_stride,
                     spans, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, SUB: tl.constexpr, SPANS: tl.constexpr, FUSE_DV: tl.constexpr,
                     VECTOR: tl.constexpr, SPAN_LIMIT: tl.constexpr, INTRA_FP32: tl.constexpr, PREC: tl.constexpr,
                     ADJACENT: tl.constexpr, DEFER_QK_COPY: tl.constexpr = False):
    """Per (SPANS consecutive spans, head, key block), for each of the spans' SUB chunks of BT tokens: dq, dk, and
    the key block's share of the log-decay gradient (scalar decay: written at dg + i_k * part_stride, the shares
    summed over key blocks afterwards; vector decay: the block's own channels, chunk_parallel_vector.py). The state
    entering and the state gradient leaving each chunk are rebuilt from the span's. With FUSE_DV (one key block,
    BK = K) also dv, as chunk_dv_kernel would: one program then reads every input once, holding more tiles. The
    spans of one program are walked in a loop, so that the compiler's software pipeline (num_stages) issues the next
    span's loads during this span's math: a program of one span waits for its loads, computes, and stores, with
    nothing to overlap."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_gh, i_k = program_ids(K // BK, ADJACENT)
    i_g, i_h = i_gh // H, i_gh % H
    if SPANS == 1:  # no loop: around one span it compiled to more spills (sm_90, D64: 96 bytes against 56)
        _dqk_span(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, part_stride, i_g, i_h,
                  i_k, H, K, V, BT, BK, BV, SUB, FUSE_DV, VECTOR, SPAN_LIMIT, INTRA_FP32, PREC, DEFER_QK_COPY)
    else:
        for i_c in range(i_g * SPANS, tl.minimum(i_g * SPANS + SPANS, spans)):
            _dqk_span(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, part_stride, i_c,
                      i_h, i_k, H, K, V, BT, BK, BV, SUB, FUSE_DV, VECTOR, SPAN_LIMIT, INTRA_FP32, PREC,
                      DEFER_QK_COPY)


@triton.jit
def _dqk_span(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, part_stride, i_c, i_h,
              i_k, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
              BV: tl.constexpr, SUB: tl.constexpr, FUSE_DV: tl.constexpr, VECTOR: tl.constexpr,
              SPAN_LIMIT: tl.constexpr, INTRA_FP32: tl.constexpr, PREC: tl.constexpr, DEFER_QK_COPY: tl.constexpr):
    if VECTOR:
        chunk_dqk_span_vector(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, i_c, i_h,
                              i_k, H, K, V, BT, BK, BV, SUB, FUSE_DV, SPAN_LIMIT, INTRA_FP32, PREC)
    else:
        _chunk_dqk_span(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, part_stride,
                        i_c, i_h, i_k, H, K, V, BT, BK, BV, SUB, FUSE_DV, PREC, DEFER_QK_COPY)


@triton.jit
def _opaque(x):
    """x, unchanged, through a move the compiler cannot see through: what it derives from the result (such as the
    shared-memory copy of a dot operand) cannot be placed before this point. Not for the interpreter (inline PTX)."""
    PACK: tl.constexpr = 32 // x.dtype.primitive_bitwidth  # elements per 32-bit register: 2 (bf16, fp16) or 1
    return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=x.dtype, is_pure=False, pack=PACK)


@triton.jit
def _chunk_dqk_span(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, part_stride,
                    i_c, i_h, i_k, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                    BK: tl.constexpr, BV: tl.constexpr, SUB: tl.constexpr, FUSE_DV: tl.constexpr,
                    PREC: tl.constexpr, DEFER_QK_COPY: tl.constexpr):
    """chunk_dqk_kernel's work for span i_c."""
    i_ch = i_c * H + i_h
    DT = q.dtype.element_ty
    span_bos, span_end = tl.load(chunk_bos + i_c), tl.load(chunk_end + i_c)
    rows = tl.arange(0, BT)
    for j in tl.static_range(SUB):
        tok, valid = chunk_tokens(span_bos, span_end - span_bos, j, BT)
        q_t = load_tile(q, tok, valid, i_h, H, K, BK, i_k)
        k_t = load_tile(k, tok, valid, i_h, H, K, BK, i_k)
        if FUSE_DV:  # dv needs the decays inside the value loop
            G = load_gates(g, tok, valid, i_h, H, K, K, 0, False)
            D = scalar_pair_decay(G, rows, rows)
            At, k_end = _dv_operands(q_t, k_t, G, D, scale, DT, PREC)
        else:
            # the raw gates load now, their cumsum waits for the value loop: made here, it would hold the loop's
            # first loads back until the gates arrived, two memory round trips per program instead of one
            g_t = load_raw_gates(g, tok, valid, i_h, H, K, K, 0, False)
            At, k_end = None, None  # no dv here
        do_h, v_dh, dA, h_dh = chunk_value_sums(q, k, v, g, do, states, dstates, dv, At, k_end, span_bos, span_end,
                                                scale, tok, valid, i_ch, i_h, i_k, H, K, V, BT, BK, BV, j, SUB,
                                                False, FUSE_DV, DT, PREC)
        if not FUSE_DV:
            if DEFER_QK_COPY:
                # q and k feed dots from shared memory, and the compiler would copy them there right after their
                # loads, before the loop: a warp issues in order, so that copy would hold back the loop's own copies
                # until q and k arrived, two memory round trips per program. Passed through an opaque move here,
                # they are copied after the loop, and every load of the program is in flight at once.
                q_t = _opaque(q_t)
                k_t = _opaque(k_t)
            G = log2_cumsum(g_t)
            D = scalar_pair_decay(G, rows, rows)
        dA *= scale
        # the diagonal's terms cancel exactly in q.dq - k.dk: kept out of the dots and the gate gradient
        dA_diag = tl.sum(tl.where(rows[:, None] == rows[None, :], dA, 0.0), axis=1)
        dAD = (tl.where(rows[:, None] > rows[None, :], dA, 0.0) * D).to(DT)
        G_last = tl.min(G, axis=0)
        # dq made, reduced and stored before dk is made: their [BT, BK] fp32 tiles are never live together
        dq_t = do_h * (tl.exp2(G)[:, None] * scale) + tl.dot(dAD, k_t, input_precision=PREC)
        db = tl.sum(q_t.to(tl.float32) * dq_t, axis=1)
        store_tile(dq, dq_t + dA_diag[:, None] * k_t.to(tl.float32), tok, valid, i_h, H, K, BK, i_k)
        dk_t = v_dh * tl.exp2(G_last - G)[:, None]  # dk through the state leaving the chunk
        # The gate gradient's direct form at the chunk end, sum(S_end * dh), without reading S_end: the state
        # leaving the chunk is S_end = 2^G_last h + sum_t 2^(G_last - G_t) k_t v_t^T.
        carry = tl.exp2(G_last) * h_dh + tl.sum(tl.sum(k_t.to(tl.float32) * dk_t, axis=1), axis=0)
        dk_t += tl.dot(tl.trans(dAD), q_t, input_precision=PREC)
        db -= tl.sum(k_t.to(tl.float32) * dk_t, axis=1)  # [BT], 0 on padding rows
        suffix = tl.sum(db, axis=0) - tl.cumsum(db, axis=0) + db + carry
        store_tile(dk, dk_t + dA_diag[:, None] * q_t.to(tl.float32), tok, valid, i_h, H, K, BK, i_k)
        tl.store(dg + i_k * part_stride + tok * H + i_h, suffix, mask=valid)


def new_chunk_states(q: torch.Tensor, v: torch.Tensor, count: int) -> torch.Tensor:
    """Buffer for one [K, V] state per chunk and head. bf16 keeps fp32's range at half the bytes; fp16 would
    overflow on long undecayed sequences."""
    dtype = torch.bfloat16 if q.dtype == torch.bfloat16 else torch.float32
    return q.new_empty(max(count, 1), q.shape[2], q.shape[3], v.shape[3], dtype=dtype)


def chunk_parallel_backward(q, k, v, log_decay, do, initial_state, dht, scale, lengths, opts, cfg: LaunchPlan,
                            states=None):
    """Gradients of the op (dq, dk, dv, dlog_decay, dh0) by the three steps above, scalar or vector decay. ``opts``
    are the backward launch options (H, K, BT, VECTOR, SPAN_LIMIT, INTRA_FP32, PREC, warps, stages); ``lengths``
    the sequence lengths in packed order; ``cfg`` the plan, whose backward is a ChunkParallelBackward (the caller has checked FusedDv against K);
    ``states`` the chunk states if the forward saved them (step 1 is then skipped)."""
    T, H, K, V = q.shape[1], q.shape[2], q.shape[3], v.shape[-1]
    BT = opts["BT"]
    backward: ChunkParallelBackward = cfg.backward
    span = cfg.state_span  # tokens per stored state: the sweeps step over spans, the gradients over chunks
    table = chunk_table(tuple(lengths), span, q.device)
    N = len(lengths)
    dstates = new_chunk_states(q, v, table.count)
    dh0 = q.new_empty(N, H, K, V, dtype=torch.float32)
    adjacent = cfg.blocks_adjacent
    vector = opts["VECTOR"]
    intra = {name: opts[name] for name in ("VECTOR", "SPAN_LIMIT", "INTRA_FP32")}
    sweep = dict(H=H, K=K, V=V, BT=span, BK=min(K, STATE_BLOCK), BV=min(V, STATE_BLOCK), VECTOR=vector,
                 PREC=opts["PREC"], ADJACENT=adjacent, num_warps=SWEEP_WARPS, num_stages=opts["num_stages"],
                 **compile_options(opts))
    grid = launch_grid(N * H, (K // sweep["BK"]) * (V // sweep["BV"]), adjacent)
    if states is None:
        states = new_chunk_states(q, v, table.count)
        launch_kernel(chunk_states_kernel, grid, k, v, log_decay, initial_state, states, table.cu_seqlens,
                      table.first, T, HAS_H0=initial_state is not None, **sweep)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    suits_gluon = gluon.suits(q, k, do, log_decay)
    dv_plan = backward.dv
    if isinstance(dv_plan, DvInSweep):
        sweep_bv = min(V, backward.value_block or STATE_BLOCK)
        stages = cfg.stages_for(N * H * (V // sweep_bv), dv_plan.num_stages or opts["num_stages"])
        gluon_ran = suits_gluon and cfg.gluon_sweeps and gluon.dstates_dv(
            q, k, log_decay, do, dht, dstates, dh0, dv, table.cu_seqlens, table.first, scale, T, N, stages)
        if not gluon_ran:
            launch_kernel(
                chunk_dstates_dv_kernel, launch_grid(N * H, V // sweep_bv, adjacent),
                q, k, log_decay, do, dht, dstates, dh0, dv, table.cu_seqlens, table.first, scale, T, H=H, K=K, V=V,
                BT=span, BV=sweep_bv, HAS_DHT=dht is not None, PREC=opts["PREC"], ADJACENT=adjacent, **intra,
                num_warps=dv_plan.num_warps or opts["num_warps"], num_stages=stages, **compile_options(opts),
            )
    else:
        launch_kernel(chunk_dstates_kernel, grid, q, log_decay, do, dht, dstates, dh0, table.cu_seqlens, table.first,
                      scale, T, HAS_DHT=dht is not None, **sweep)
    BK, BV = min(K, backward.key_block or K), min(V, backward.value_block or V)
    launch = dict(H=H, K=K, V=V, BT=BT, BV=BV, SUB=span // BT, PREC=opts["PREC"], num_warps=opts["num_warps"],
                  num_stages=opts["num_stages"], **intra, **compile_options(opts))
    if table.count and isinstance(dv_plan, DvKernel):
        launch_kernel(chunk_dv_kernel, (table.count * H,), q, k, log_decay, do, dstates, table.bos, table.end, dv,
                      scale, **launch)
    if table.count and suits_gluon and backward.gluon_dqk and span == gluon.CHUNK:
        dg = gluon.new_gate_grad(log_decay, K)
        if gluon.dqk(q, k, v, log_decay, do, states, dstates, table.bos, table.end, dq, dk, dg, scale, table.count):
            return dq, dk, dv, dg, dh0
    NK = K // BK
    # scalar decay: one share of the gate gradient per key block, summed below; vector decay: each block its channels
    parts = 1 if vector else NK
    dg = q.new_empty((parts, *log_decay.shape), dtype=torch.float32)
    if table.count:
        spans_per_program = backward.spans_per_program
        launch_kernel(
            chunk_dqk_kernel, launch_grid(triton.cdiv(table.count, spans_per_program) * H, NK, adjacent),
            q, k, v, log_decay, do, states, dstates, table.bos, table.end, dq, dk, dv, dg, scale, log_decay.numel(),
            table.count, BK=BK, SPANS=spans_per_program, FUSE_DV=isinstance(dv_plan, FusedDv), ADJACENT=adjacent,
            DEFER_QK_COPY=not interpreter_active(), **launch,
        )
    return dq, dk, dv, dg.sum(0) if parts > 1 else dg[0], dh0
