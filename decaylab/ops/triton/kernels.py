"""Chunked Triton kernels for decayed linear attention, scalar and vector decay, forward and backward.

Per head, S_t = diag(lambda_t) S_{t-1} + k_t v_t^T and o_t = scale * S_t^T q_t with lambda_t = exp(log_decay_t).
One forward program owns one (sequence, head) -- or one segment of it (segments.py) -- and walks the chunks of
BT tokens with the [K, V] state in fp32 registers, so chunk states never touch memory. Per chunk, with G the
chunk-local cumulative decay in log2 units (fp32) and G_last its last row:

    1. o     = scale * ((q * 2^G) S  +  A v)                 A: masked intra-chunk scores (intra.py)
    2. S     = 2^G_last * S + (k * 2^(G_last - G))^T v       every exponent <= 0 for log_decay <= 0

Backward, two sweeps (gradients of every input; the state is recomputed, saved only every STRIDE tokens), each
program taking a block of BK key channels (the state's rows are independent; dv sums the blocks' partials):

    forward sweep:  dq = scale * 2^G * (do S^T) + intra(dA, k),   dA = scale * do v^T (masked)
    reverse sweep:  dS carried from dht backwards; dv = A^T do + (k * 2^(G_last - G)) dS,
                    dk = intra(dA, q) + 2^(G_last - G) * (v dS^T);   dS <- 2^G_last dS + scale (q 2^G)^T do
                    dlog_decay_t = sum_{s >= t} (q_s dq_s - k_s dk_s)  (+ sum_v h_T * dh_T from the final state)

The last line is the reverse-cumsum identity: b_t = sum_{s<=t} log_decay_s enters as +b for the query side and
the final state, and as -b for the key side. It is accumulated inside the reverse sweep, so the gate gradient
costs no extra pass, and restarted every STRIDE tokens from its direct form sum_v S * dS. Varlen: with VARLEN
the sequence bounds come from cu_seqlens (B = 1, packed tokens).
"""

import triton
import triton.language as tl

from decaylab.ops.triton.blocks import advance_state, block_ptrs, boundary_index, chunk_tokens, decay_rows, load_chunk, \
    load_gates, load_tile, program_ids, retreat_dstate, sequence_bounds, state_ptrs, store_chunk, store_tile
from decaylab.ops.triton.intra import scalar_pair_decay, vector_dq_intra, vector_scores, vector_scores_and_dk_intra

@triton.jit
def _scores(q, k, G, rows, cols, BT: tl.constexpr, VECTOR: tl.constexpr, SPAN_LIMIT: tl.constexpr,
            INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    if VECTOR:
        A = vector_scores(q, k, G, rows, cols, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
    else:
        A = tl.dot(q.to(DT), tl.trans(k.to(DT)), input_precision=PREC) * scalar_pair_decay(G, rows, cols)
    return A


@triton.jit
def forward_kernel(q, k, v, g, o, h0, ht, cu_seqlens, states, state_first, scale, T,
                   H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
                   VECTOR: tl.constexpr, VARLEN: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr,
                   SAVE_STATES: tl.constexpr, STATE_EVERY: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                   INTRA_FP32: tl.constexpr, PREC: tl.constexpr, ADJACENT: tl.constexpr):
    """One program per (sequence, head, block of BV value channels): the state's columns are independent, so a
    block carries a [K, BV] state and recomputes the chunk's scores. With SAVE_STATES, the state entering every
    STATE_EVERY-th chunk is stored for the chunk-parallel backward, at index state_first[program] + i_t / STATE_EVERY
    (chunk_parallel.py)."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_nh, i_v = program_ids(V // BV, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, VARLEN)
    DT = q.dtype.element_ty
    rows = tl.arange(0, BT)
    cols = tl.arange(0, BT)
    S = tl.zeros([K, BV], dtype=tl.float32)
    if HAS_H0:
        S = tl.load(block_ptrs(h0, i_nh, K, V, K, BV, 0, i_v))
    if SAVE_STATES:
        c0 = tl.load(state_first + i_n)
    for i_t in range(0, tl.cdiv(seq_len, BT)):
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        if SAVE_STATES:
            if i_t % STATE_EVERY == 0:
                tl.store(block_ptrs(states, (c0 + i_t // STATE_EVERY) * H + i_h, K, V, K, BV, 0, i_v),
                         S.to(states.dtype.element_ty))
        q_t = load_chunk(q, tok, valid, i_h, H, K)
        k_t = load_chunk(k, tok, valid, i_h, H, K)
        v_t = load_tile(v, tok, valid, i_h, H, V, BV, i_v)
        G = load_gates(g, tok, valid, i_h, H, K, K, 0, VECTOR)
        G_last = tl.min(G, axis=0)
        # 1. output: inter-chunk through the carried state, intra-chunk through the masked scores
        # (the scores first: they are dead before the decayed queries are made, so the two are never live at once)
        A = _scores(q_t, k_t, G, rows, cols, BT, VECTOR, SPAN_LIMIT, INTRA_FP32, DT, PREC)
        o_t = tl.dot(A.to(DT), v_t.to(DT), input_precision=PREC)
        if VECTOR:
            o_t += tl.dot(decay_rows(q_t, G, VECTOR).to(DT), S.to(DT), input_precision=PREC)
        else:  # the query's decay scales the product's rows: q feeds the dot straight from shared memory
            o_t += tl.dot(q_t.to(DT), S.to(DT), input_precision=PREC) * tl.exp2(G)[:, None]
        store_tile(o, o_t * scale, tok, valid, i_h, H, V, BV, i_v)
        # 2. state update; keys decayed to the chunk end
        S = advance_state(S, k_t, v_t, G, G_last, VECTOR, DT, PREC)
    if STORE_HT:
        tl.store(block_ptrs(ht, i_nh, K, V, K, BV, 0, i_v), S)


@triton.jit
def backward_dq_kernel(q, k, v, g, do, dq, qdq, h0, states, boundary_offsets, cu_seqlens, scale, T, part_stride,
                       H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BT: tl.constexpr,
                       VECTOR: tl.constexpr, VARLEN: tl.constexpr, HAS_H0: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                       STRIDE: tl.constexpr, INTRA_FP32: tl.constexpr, PREC: tl.constexpr, ADJACENT: tl.constexpr):
    """Forward sweep over key channels i_k*BK ...: dq; q * dq in fp32 (for scalar decay summed over the block,
    one partial per block, part_stride apart) and the state every STRIDE tokens, both for the gate gradient.
    Every quantity here is per key channel, so the blocks are independent programs."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_nh, i_k = program_ids(K // BK, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, VARLEN)
    first_boundary = boundary_index(boundary_offsets, i_n, T, VARLEN, STRIDE)
    DT = q.dtype.element_ty
    rows = tl.arange(0, BT)
    cols = tl.arange(0, BT)
    strict = rows[:, None] > cols[None, :]  # dA without its diagonal
    S = tl.zeros([BK, V], dtype=tl.float32)
    if HAS_H0:
        S = tl.load(state_ptrs(h0, i_nh, K, V, BK, i_k))
    for i_t in range(0, tl.cdiv(seq_len, BT)):
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        q_t = load_tile(q, tok, valid, i_h, H, K, BK, i_k)
        k_t = load_tile(k, tok, valid, i_h, H, K, BK, i_k)
        v_t = load_chunk(v, tok, valid, i_h, H, V)
        do_t = load_chunk(do, tok, valid, i_h, H, V)
        G = load_gates(g, tok, valid, i_h, H, K, BK, i_k, VECTOR)
        G_last = tl.min(G, axis=0)
        dA = tl.dot(do_t, tl.trans(v_t), input_precision=PREC) * scale
        # The diagonal (i = j, decay 2^0 = 1) adds dA_ii k_i to dq_i and dA_ii q_i to dk_i, which cancel exactly
        # in q dq - k dk. It is kept out of the low-precision dots and out of the gate gradient, whose true
        # value under strong decay is far smaller than that term's rounding error.
        dA_diag = tl.sum(tl.where(rows[:, None] == cols[None, :], dA, 0.0), axis=1)
        dA = tl.where(strict, dA, 0.0)
        dq_t = decay_rows(tl.dot(do_t, tl.trans(S.to(DT)), input_precision=PREC), G, VECTOR) * scale
        if VECTOR:
            dq_t += vector_dq_intra(dA, k_t, G, rows, cols, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
        else:
            dq_t += tl.dot((dA * scalar_pair_decay(G, rows, cols)).to(DT), k_t, input_precision=PREC)
        store_tile(dq, dq_t + dA_diag[:, None] * k_t.to(tl.float32), tok, valid, i_h, H, K, BK, i_k)
        if VECTOR:
            store_tile(qdq, q_t.to(tl.float32) * dq_t, tok, valid, i_h, H, K, BK, i_k)
        else:
            tl.store(qdq + i_k * part_stride + tok * H + i_h, tl.sum(q_t.to(tl.float32) * dq_t, axis=1), mask=valid)
        S = advance_state(S, k_t, v_t, G, G_last, VECTOR, DT, PREC)
        end = (i_t + 1) * BT
        if (end % STRIDE == 0) & (end < seq_len):
            tl.store(state_ptrs(states, (first_boundary + end // STRIDE - 1) * H + i_h, K, V, BK, i_k),
                     S.to(states.dtype.element_ty))


@triton.jit
def _gate_carry(S, dS, VECTOR: tl.constexpr):
    """The gate gradient's direct form at a chunk end, sum_v S * dS over this key block's rows: [BK] for vector
    decay, the block's share of the sum over its rows for scalar decay."""
    rows = tl.sum(S * dS, axis=1)
    if VECTOR:
        return rows
    else:
        return tl.sum(rows, axis=0)


@triton.jit
def backward_dkv_kernel(q, k, v, g, do, qdq, dk, dv, dg, dht, ht, dh0, states, boundary_offsets, cu_seqlens,
                        scale, T, part_stride, dv_stride, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                        BK: tl.constexpr, BT: tl.constexpr, VECTOR: tl.constexpr, VARLEN: tl.constexpr,
                        HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                        STRIDE: tl.constexpr, INTRA_FP32: tl.constexpr, PREC: tl.constexpr,
                        ADJACENT: tl.constexpr):
    """Reverse sweep over key channels i_k*BK ...: dk, dlog_decay (reverse cumsum carried across chunks), dh0, and
    this block's share of dv (dv sums over key channels: one partial per block, dv_stride apart). For scalar
    decay the gate gradient is a sum over key channels too: one partial per block, part_stride apart. With HAS_DHT,
    dht and ht are the state gradient and the state at the program's end (of its sequence or segment)."""
    scale = tl.cast(scale, tl.float32)  # torch.compile hands a Python float over as fp64
    i_nh, i_k = program_ids(K // BK, ADJACENT)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len = sequence_bounds(cu_seqlens, i_n, T, VARLEN)
    first_boundary = boundary_index(boundary_offsets, i_n, T, VARLEN, STRIDE)
    DT = q.dtype.element_ty
    rows = tl.arange(0, BT)
    cols = tl.arange(0, BT)
    strict = rows[:, None] > cols[None, :]  # dA without its diagonal
    dS = tl.zeros([BK, V], dtype=tl.float32)
    if VECTOR:
        carry = tl.zeros([BK], dtype=tl.float32)
    else:
        carry = tl.zeros([], dtype=tl.float32)
    if HAS_DHT:
        dS = tl.load(state_ptrs(dht, i_nh, K, V, BK, i_k))
        # the end state's gate gradient seeds the reverse cumsum
        carry = _gate_carry(tl.load(state_ptrs(ht, i_nh, K, V, BK, i_k)), dS, VECTOR)
    NT = tl.cdiv(seq_len, BT)
    for i_r in range(0, NT):
        i_t = NT - 1 - i_r
        tok, valid = chunk_tokens(bos, seq_len, i_t, BT)
        end = (i_t + 1) * BT
        restart = (end % STRIDE == 0) & (end < seq_len)
        # Every load of the step is issued here, ahead of its stores: a load after a store cannot be moved above
        # it (they might alias), so its latency would be paid in full each step. The saved state is loaded on
        # every step under a mask (no traffic when off), outside the branch that uses it, so that it is issued
        # with the other tiles too.
        restart_rows = tl.arange(0, BK) < tl.where(restart, BK, 0)  # every row, or none
        S_end = tl.load(state_ptrs(states, (first_boundary + end // STRIDE - 1) * H + i_h, K, V, BK, i_k),
                        mask=restart_rows[:, None], other=0.0)
        q_t = load_tile(q, tok, valid, i_h, H, K, BK, i_k)
        k_t = load_tile(k, tok, valid, i_h, H, K, BK, i_k)
        v_t = load_chunk(v, tok, valid, i_h, H, V)
        do_t = load_chunk(do, tok, valid, i_h, H, V)
        G = load_gates(g, tok, valid, i_h, H, K, BK, i_k, VECTOR)
        if VECTOR:
            qdq_t = load_tile(qdq, tok, valid, i_h, H, K, BK, i_k)  # [BT, BK]
        else:
            qdq_t = tl.load(qdq + i_k * part_stride + tok * H + i_h, mask=valid, other=0.0)  # [BT]
        if restart:
            # Restart the gate-gradient carry from its direct form, sum_v S_end * dS_end (S_end saved by the
            # forward sweep): the suffix sums of q dq - k dk cancel heavily under strong decay, and their
            # rounding error would otherwise grow with the sequence length.
            carry = _gate_carry(S_end.to(tl.float32), dS, VECTOR)
        G_last = tl.min(G, axis=0)
        dA = tl.dot(do_t, tl.trans(v_t), input_precision=PREC) * scale
        dA_diag = tl.sum(tl.where(rows[:, None] == cols[None, :], dA, 0.0), axis=1)  # see backward_dq_kernel
        dA = tl.where(strict, dA, 0.0)
        # A: this block's share of the masked scores (a sum over key channels)
        if VECTOR:
            A, dk_t = vector_scores_and_dk_intra(q_t, k_t, G, dA, rows, cols, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
        else:
            D = scalar_pair_decay(G, rows, cols)
            A = tl.dot(q_t, tl.trans(k_t), input_precision=PREC) * D
            dk_t = tl.dot(tl.trans(dA * D).to(DT), q_t, input_precision=PREC)
        A = A * scale
        dS_dt = dS.to(DT)
        dv_t = tl.dot(tl.trans(A).to(DT), do_t, input_precision=PREC)
        dv_t += tl.dot(decay_rows(k_t, G_last - G, VECTOR).to(DT), dS_dt, input_precision=PREC)
        dk_t += decay_rows(tl.dot(v_t, tl.trans(dS_dt), input_precision=PREC), G_last - G, VECTOR)
        store_tile(dk, dk_t + dA_diag[:, None] * q_t.to(tl.float32), tok, valid, i_h, H, K, BK, i_k)
        store_chunk(dv + i_k * dv_stride, dv_t, tok, valid, i_h, H, V)
        # gate gradient: suffix sums of q*dq - k*dk within the chunk plus everything after it
        if VECTOR:
            db = qdq_t - k_t.to(tl.float32) * dk_t  # [BT, BK]
            total = tl.sum(db, axis=0)
            suffix = total[None, :] - tl.cumsum(db, axis=0) + db + carry[None, :]
            store_tile(dg, suffix, tok, valid, i_h, H, K, BK, i_k)
        else:
            db = qdq_t - tl.sum(k_t.to(tl.float32) * dk_t, axis=1)  # [BT]
            total = tl.sum(db, axis=0)
            suffix = total - tl.cumsum(db, axis=0) + db + carry
            tl.store(dg + i_k * part_stride + tok * H + i_h, suffix, mask=valid)
        carry += total
        # carry the state gradient to the chunk start
        dS = retreat_dstate(dS, q_t, do_t, G, G_last, scale, VECTOR, DT, PREC)
    if STORE_DH0:
        tl.store(state_ptrs(dh0, i_nh, K, V, BK, i_k), dS)


@triton.jit
def sum_partials_kernel(parts, out, M, NP: tl.constexpr, BLOCK: tl.constexpr):
    """out = sum of NP partials [NP, M] in fp32, cast to out's dtype, in one pass (reads each partial once)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    total = tl.zeros([BLOCK], dtype=tl.float32)
    for i in tl.static_range(NP):
        total += tl.load(parts + i * M + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + offs, total.to(out.dtype.element_ty), mask=mask)
