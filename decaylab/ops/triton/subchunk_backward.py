"""Vector decay's intra-chunk gradients for a chunk-parallel backward that walks chunks of BT tokens but takes their
intra-chunk products in NC = BT / BC sub-chunks of BC tokens (ChunkParallelBackward.subchunk), with the factors of
the sub-chunked forward (subchunk.py, whose docstring defines Gl, t, B, qg, kg and the hierarchy of levels):

    dq_i = sum_{j<i} dA_ij k_j 2^(G_i - G_j)        dk_j = sum_{i>j} dA_ij q_i 2^(G_i - G_j)

split exactly as the scores A_ij = sum_k q_ik k_jk 2^(G_ik - G_jk) are, with the other operand in the dot:

    r > c, level boundary b:  dq_i = 2^Gl_i 2^(B_{r-1} - B_b)  [dA_lvl (kg * 2^(B_b - B_c))]_i
                              dk_j = 2^(t_c - Gl_j) 2^(B_b - B_c)  [dA_lvl^T (qg * 2^(B_{r-1} - B_b))]_j
    r == c:                   dq_i = 2^Gl_i 2^-t_r [dA_d kg]_i,       dk_j = 2^(t_r - Gl_j) 2^-t_r [dA_d^T qg]_j

dA_lvl is dA within the level's groups of sub-chunks (the factors, 0 outside the level's halves, zero the rest),
dA_d dA within the diagonal blocks. Every dot operand is a decayed q or k (<= |q|, |k|), so bf16 operands hold it;
the factors past 1 (2^-t_r <= 2^SPAN_LIMIT while sub-chunk r's decay is within it) multiply fp32 results. The
inter-chunk factors 2^G = 2^Gl 2^B_{r-1} and 2^(G_last - G) = 2^(t - Gl) 2^(G_last - B) are made from the same
tiles, so the program holds 2^Gl and 2^(t - Gl) where the 16-token backward held G. Past SPAN_LIMIT (hard resets)
the diagonal blocks go element-wise, from q, k and g reloaded: a branch that needs them costs no registers on the
chunks that do not take it.
"""

import triton
import triton.language as tl

from decaylab.ops.triton.blocks import RCP_LN2, load_tile
from decaylab.ops.triton.subchunk import _pick, in_groups, level_factors, subchunk_exact_diagonal, subchunk_intra


@triton.jit
def _dot(a, b, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """a b on fp32 operands (INTRA_FP32: fp16 and fp32 inputs, or precise_intra) or in the input dtype."""
    if INTRA_FP32:
        return tl.dot(a, b, input_precision=PREC)
    else:
        return tl.dot(a.to(DT), b.to(DT), input_precision=PREC)


@triton.jit
def _rows(x, f, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr):
    """The [BT, K] tile x, each row times its sub-chunk's row of the [NC, K] factor f. The factor is expanded to
    [BT, K] rather than x reshaped: x, a dot's result, keeps its layout."""
    f_rows = tl.reshape(tl.broadcast_to(f[:, None, :], [BT // BC, BC, K]), [BT, K])
    return x * f_rows


@triton.jit
def subchunk_last(B):
    """G_last [K], the chunk's decay: the last row of the sub-chunk ends B [NC, K]."""
    return tl.sum(tl.where(tl.arange(0, B.shape[0])[:, None] == B.shape[0] - 1, B, 0.0), axis=0)


@triton.jit
def subchunk_to_end(down, B, G_last, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr):
    """2^(G_last - G) = 2^(t - Gl) 2^(G_last - B), fp32 [BT, K] (<= 1): the factor of dk's term through the state
    gradient leaving the chunk."""
    return tl.reshape(down * tl.exp2(G_last[None, :] - B)[:, None, :], [BT, K])


@triton.jit
def subchunk_dq(dA, dq_state, k_t, up, down, t, B, fits, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr,
               INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """dq_i = 2^G_i dq_state_i + sum_{j<i} dA_ij k_j 2^(G_i - G_j), fp32 [BT, K]: dq_state (scale * do h^T) the
    share through the state entering the chunk, dA fp32 [BT, BT] masked below its diagonal. Where not fits, the
    diagonal blocks' share is left out (subchunk_exact_dq_diagonal makes it). The state's share starts the sum, so
    that its tile is the accumulator, not a second one beside it."""
    NC: tl.constexpr = BT // BC
    sub = tl.arange(0, NC)
    B_prev = _pick(B, sub - 1)
    rows_sub = tl.arange(0, BT) // BC
    kg = tl.reshape(k_t, [NC, BC, K]).to(tl.float32) * down
    dq = _rows(dq_state, tl.exp2(B_prev), BT, BC, K)  # without the rows' 2^Gl, applied last
    for level in tl.static_range(NC):
        if (1 << level) < NC:
            q_f, k_f = level_factors(B, B_prev, sub, 1 << level)
            part = _dot(in_groups(dA, rows_sub, 1 << level), tl.reshape(kg * k_f[:, None, :], [BT, K]),
                        INTRA_FP32, DT, PREC)
            dq += _rows(part, q_f, BT, BC, K)
    if fits:
        part = _dot(tl.where(rows_sub[:, None] == rows_sub[None, :], dA, 0.0), tl.reshape(kg, [BT, K]),
                    INTRA_FP32, DT, PREC)
        dq += _rows(part, tl.exp2(-t), BT, BC, K)
    return tl.reshape(tl.reshape(dq, [NC, BC, K]) * up, [BT, K])


@triton.jit
def subchunk_dk(dA, dk_state, q_t, up, down, t, B, G_last, fits, BT: tl.constexpr, BC: tl.constexpr,
               K: tl.constexpr, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """dk_j = 2^(G_last - G_j) dk_state_j + sum_{i>j} dA_ij q_i 2^(G_i - G_j), fp32 [BT, K], as subchunk_dq
    (dk_state = v dh^T; diagonal blocks left out where not fits: subchunk_exact_dk_diagonal)."""
    NC: tl.constexpr = BT // BC
    sub = tl.arange(0, NC)
    B_prev = _pick(B, sub - 1)
    rows_sub = tl.arange(0, BT) // BC
    qg = tl.reshape(q_t, [NC, BC, K]).to(tl.float32) * up
    dk = _rows(dk_state, tl.exp2(G_last[None, :] - B), BT, BC, K)  # without the rows' 2^(t - Gl), applied last
    for level in tl.static_range(NC):
        if (1 << level) < NC:
            q_f, k_f = level_factors(B, B_prev, sub, 1 << level)
            part = _dot(tl.trans(in_groups(dA, rows_sub, 1 << level)), tl.reshape(qg * q_f[:, None, :], [BT, K]),
                        INTRA_FP32, DT, PREC)
            dk += _rows(part, k_f, BT, BC, K)
    if fits:
        part = _dot(tl.trans(tl.where(rows_sub[:, None] == rows_sub[None, :], dA, 0.0)), tl.reshape(qg, [BT, K]),
                    INTRA_FP32, DT, PREC)
        dk += _rows(part, tl.exp2(-t), BT, BC, K)
    return tl.reshape(tl.reshape(dk, [NC, BC, K]) * down, [BT, K])


@triton.jit
def _diagonal_column(dA, j, BT: tl.constexpr, BC: tl.constexpr):
    """[NC, BC]: dA_{i, c*BC + j} for row i of sub-chunk c, column j of each diagonal block."""
    rows = tl.arange(0, BT)
    col = tl.sum(tl.where(rows[None, :] == (rows // BC * BC + j)[:, None], dA, 0.0), axis=1)
    return tl.reshape(col, [BT // BC, BC])


@triton.jit
def _reload(x, g, tok, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr,
            BK: tl.constexpr, i_k):
    """x's tile of key channels i_k*BK ... and their sub-chunk-local cumulative log2 decays, fp32 [NC, BC, BK]."""
    NC: tl.constexpr = BT // BC
    x3 = tl.reshape(load_tile(x, tok, valid, i_h, H, K, BK, i_k), [NC, BC, BK]).to(tl.float32)
    g3 = tl.reshape(load_tile(g, tok, valid, i_h, H, K, BK, i_k), [NC, BC, BK])
    return x3, tl.cumsum(g3.to(tl.float32), axis=1) * RCP_LN2


@triton.jit
def _decays_from_row(Gl, b, j):
    """(row j of each sub-chunk as a [1, BC, 1] mask, 2^(G_i - G_j) for its rows i >= j and 0 above, fp32 [NC, BC, BK]);
    the exponent masked before the exp2, so it never overflows."""
    at_j = (b == j)[None, :, None]
    G_j = tl.sum(tl.where(at_j, Gl, 0.0), axis=1)  # [NC, BK]
    return at_j, tl.exp2(tl.where((b >= j)[None, :, None], Gl - G_j[:, None, :], float("-inf")))


@triton.jit
def subchunk_exact_dq_diagonal(dA, k, g, tok, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                               K: tl.constexpr, BK: tl.constexpr, i_k):
    """The diagonal blocks' share of dq (key channels i_k*BK ...), element-wise: for a chunk with a sub-chunk past
    SPAN_LIMIT. Key row j of every sub-chunk at a time, exponents masked to <= 0 before the exp2."""
    NC: tl.constexpr = BT // BC
    b = tl.arange(0, BC)
    k3, Gl = _reload(k, g, tok, valid, i_h, H, BT, BC, K, BK, i_k)
    dq = tl.zeros([NC, BC, BK], dtype=tl.float32)
    for j in range(BC):
        at_j, decay = _decays_from_row(Gl, b, j)
        k_j = tl.sum(tl.where(at_j, k3, 0.0), axis=1)  # [NC, BK]
        dq += _diagonal_column(dA, j, BT, BC)[:, :, None] * k_j[:, None, :] * decay
    return tl.reshape(dq, [BT, BK])


@triton.jit
def subchunk_exact_dk_diagonal(dA, q, g, tok, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                               K: tl.constexpr, BK: tl.constexpr, i_k):
    """The diagonal blocks' share of dk, element-wise (as subchunk_exact_dq_diagonal)."""
    NC: tl.constexpr = BT // BC
    b = tl.arange(0, BC)
    q3, Gl = _reload(q, g, tok, valid, i_h, H, BT, BC, K, BK, i_k)
    dk = tl.zeros([NC, BC, BK], dtype=tl.float32)
    for j in range(BC):
        at_j, decay = _decays_from_row(Gl, b, j)
        dk_j = tl.sum(_diagonal_column(dA, j, BT, BC)[:, :, None] * q3 * decay, axis=1)  # [NC, BK]
        dk += tl.where(at_j, dk_j[:, None, :], 0.0)
    return tl.reshape(dk, [BT, BK])


@triton.jit
def subchunk_dv_operands(q_t, k_t, q, k, g, tok, valid, i_h, scale, H: tl.constexpr, BT: tl.constexpr,
                         BC: tl.constexpr, K: tl.constexpr, SPAN_LIMIT: tl.constexpr, INTRA_FP32: tl.constexpr,
                         DT: tl.constexpr, PREC: tl.constexpr):
    """(A^T, k * 2^(G_last - G)) in DT, the operands of a chunk's dv = A^T do + k_end dh, by the sub-chunked
    forward's subchunk_intra (q_t, k_t: the chunk's full-width tiles; A sums over every key channel), the diagonal
    blocks element-wise where a sub-chunk is past SPAN_LIMIT."""
    A, _, k_end, _, fits = subchunk_intra(q_t, k_t, g, tok, valid, i_h, H, BT, BC, K, SPAN_LIMIT, INTRA_FP32, DT,
                                          PREC)
    if not fits:
        A += subchunk_exact_diagonal(q, k, g, tok, valid, i_h, H, BT, BC, K, min(K, 32))
    return tl.trans(A * scale).to(DT), k_end
