"""The chunk-parallel backward's per-chunk gradients for vector decay (chunk_parallel.py launches them).

With vector decay the chunk-local cumulative log2 decay G is a [BT, BK] tile, one column per key channel, and
every factor 2^G of the scalar kernel becomes an element-wise one (h: the state entering the chunk, dh: the state
gradient leaving it):

    dq = scale * (do h^T) * 2^G + intra_q(dA, k)          dA = scale * do v^T,  intra_q as in intra.vector_dq_intra
    dk = (v dh^T) * 2^(G_last - G) + intra_k(dA, q)       intra_k as in intra.vector_dk_intra
    dv = A^T do + (k * 2^(G_last - G)) dh                 A = scale * intra.vector_scores (a sum over every key)
    dlog_decay = suffix sums over rows of q*dq - k*dk, plus per key channel sum_v S_end * dh

Every term of dq, dk and the gate gradient is per key channel (dA sums over the value channels, which each program
walks in full), so the key channels split into blocks of BK with no partial sums; dv sums over every key channel,
so FUSE_DV needs BK = K. The intra-chunk products have no exact factored form here: intra.py's split-factor path
runs them on tensor cores while the chunk's decay span allows, and an exact element-wise path beyond it.
"""

import triton
import triton.language as tl

from decaylab.ops.triton.blocks import chunk_tokens, chunk_value_sums, load_gates, load_tile, store_tile
from decaylab.ops.triton.intra import vector_dk_intra, vector_dq_intra, vector_scores


@triton.jit
def vector_dv_operands(q_t, k_t, G, rows, scale, BT: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                       INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """(A^T, k * 2^(G_last - G)) in the dot operand dtype: the operands of a chunk's dv = A^T do + k_end dh, from
    the chunk's full-width q, k and G ([BT, K]: A sums over every key channel)."""
    A = vector_scores(q_t, k_t, G, rows, rows, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC) * scale
    k_end = k_t.to(tl.float32) * tl.exp2(tl.min(G, axis=0)[None, :] - G)
    return tl.trans(A).to(DT), k_end.to(DT)


@triton.jit
def chunk_dqk_span_vector(q, k, v, g, do, states, dstates, chunk_bos, chunk_end, dq, dk, dv, dg, scale, i_c, i_h,
                          i_k, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                          BK: tl.constexpr, BV: tl.constexpr, SUB: tl.constexpr, FUSE_DV: tl.constexpr,
                          SPAN_LIMIT: tl.constexpr, INTRA_FP32: tl.constexpr, PREC: tl.constexpr):
    """chunk_parallel.chunk_dqk_kernel's work for span i_c under vector decay: dq, dk and the gate gradient of key
    channels i_k*BK ... (written straight to dg: no other program has a share of them), and with FUSE_DV (BK = K)
    dv."""
    i_ch = i_c * H + i_h
    DT = q.dtype.element_ty
    span_bos, span_end = tl.load(chunk_bos + i_c), tl.load(chunk_end + i_c)
    rows = tl.arange(0, BT)
    for j in tl.static_range(SUB):
        tok, valid = chunk_tokens(span_bos, span_end - span_bos, j, BT)
        q_t = load_tile(q, tok, valid, i_h, H, K, BK, i_k)
        k_t = load_tile(k, tok, valid, i_h, H, K, BK, i_k)
        G = load_gates(g, tok, valid, i_h, H, K, BK, i_k, True)  # [BT, BK], log2 units
        if FUSE_DV:
            At, k_end = vector_dv_operands(q_t, k_t, G, rows, scale, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
        else:
            At, k_end = None, None  # no dv here
        do_h, v_dh, dA, h_dh = chunk_value_sums(q, k, v, g, do, states, dstates, dv, At, k_end, span_bos, span_end,
                                                scale, tok, valid, i_ch, i_h, i_k, H, K, V, BT, BK, BV, j, SUB,
                                                True, FUSE_DV, DT, PREC)
        dA *= scale
        # the diagonal's terms cancel exactly in q*dq - k*dk, channel by channel as for scalar decay: kept out of
        # the intra-chunk products and the gate gradient, added to the stored dq and dk alone
        dA_diag = tl.sum(tl.where(rows[:, None] == rows[None, :], dA, 0.0), axis=1)
        dA = tl.where(rows[:, None] > rows[None, :], dA, 0.0)
        G_last = tl.min(G, axis=0)  # [BK]
        # dq made, reduced and stored before dk is made: their [BT, BK] fp32 tiles are never live together
        dq_t = do_h * tl.exp2(G) * scale + vector_dq_intra(dA, k_t, G, rows, rows, BT, SPAN_LIMIT, INTRA_FP32, DT,
                                                           PREC)
        db = q_t.to(tl.float32) * dq_t  # [BT, BK]
        store_tile(dq, dq_t + dA_diag[:, None] * k_t.to(tl.float32), tok, valid, i_h, H, K, BK, i_k)
        dk_t = v_dh * tl.exp2(G_last[None, :] - G)  # dk through the state leaving the chunk
        # the gate gradient's direct form at the chunk end, sum_v S_end * dh per key channel, without S_end:
        # S_end = 2^G_last * h + sum_t (k_t * 2^(G_last - G_t)) v_t^T, so its share in dh is the one through h plus
        # sum_t k_t * (v_t dh^T) * 2^(G_last - G_t), the dk just made
        carry = tl.exp2(G_last) * h_dh + tl.sum(k_t.to(tl.float32) * dk_t, axis=0)  # [BK]
        dk_t += vector_dk_intra(dA, q_t, G, rows, rows, BT, SPAN_LIMIT, INTRA_FP32, DT, PREC)
        db -= k_t.to(tl.float32) * dk_t  # 0 on padding rows
        suffix = tl.sum(db, axis=0)[None, :] - tl.cumsum(db, axis=0) + db + carry[None, :]
        store_tile(dk, dk_t + dA_diag[:, None] * q_t.to(tl.float32), tok, valid, i_h, H, K, BK, i_k)
        store_tile(dg, suffix, tok, valid, i_h, H, K, BK, i_k)
