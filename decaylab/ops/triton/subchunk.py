"""Vector decay's intra-chunk pieces for a forward that walks chunks of BT tokens but builds the scores in NC = BT / BC
sub-chunks of BC tokens (ForwardPlan.subchunk): the chunk's q S and k^T v dots run at M = BT, while no exponent
factor grows with the chunk's decay span, only with a sub-chunk's.

Per chunk, with Gl the sub-chunk-local cumulative log2 decay (fp32, <= 0, non-increasing down each sub-chunk), t_r
its total over sub-chunk r and B_r = t_0 + ... + t_r the chunk-local decay at the end of sub-chunk r (B_-1 = 0),
row i of sub-chunk r has G_i = B_{r-1} + Gl_i. Two tiles carry every factor:

    qg = q * 2^Gl,   kg = k * 2^(t - Gl)           both <= |q|, |k|: keys decayed to their sub-chunk's end

and the rest are per-sub-chunk [NC, K] vectors on their rows:

    A_ij (r == c)   = (qg * 2^-t_r) . kg_j          2^-t_r <= 2^SPAN_LIMIT while sub-chunk r's decay is within it;
                                                    otherwise the chunk's diagonal blocks are made element-wise
    A_ij (r > c)    = (qg * 2^(B_{r-1} - B_b)) . (kg_j * 2^(B_b - B_c))    for a boundary b, c <= b < r: both <= 1
    q * 2^G         = qg * 2^B_{r-1},   k * 2^(G_last - G) = kg * 2^(G_last - B_c)      (the inter-chunk operands)

The off-diagonal blocks take the boundary hierarchically, one [BT, K] x [K, BT] dot per level: at level s = 1, 2,
.., NC/2 each group of 2s sub-chunks pairs its right half's rows with its left half's columns around the boundary
between the halves (s = 1: (1,0), (3,2), ...; s = 2: (2,0), (2,1), (3,0), (3,1); ...), rows and columns outside
zeroed by their factor (2^-inf = 0, never inf * 0), pairs of different groups selected away on the [BT, BT] result.

Why this shape: Triton cannot slice register tiles, so every block is a whole-tile dot with operands masked by
per-sub-chunk factors. One dot per column sub-chunk would need NC - 1 off-diagonal dots; the hierarchy needs
log2(NC) (2 at 64/16), with the diagonal 3 dots of BT x BT x K where fla's 16 x 16 blocks would do the useful
tenth of that work, but on tensor cores at M = BT the forward stays bound by memory and exp2 throughput, not by
the dots. exp2 runs on two [BT, K] tiles per chunk (2^Gl, 2^(t - Gl)) and a few [NC, K] vectors: fewer per token
than the 16-token chunk path (2^(G - R), a division, 2^G and 2^(G_last - G)). Only qg and kg stay live as fp32
tiles across the dots; the operands are products with broadcast vectors. Gl is a cumsum within each sub-chunk
(a reshape to [NC, BC, K]), not the difference of two chunk-wide cumsums, so its rounding does not grow with the
chunk's decay. The element-wise diagonal (hard resets) reloads q, k and g in blocks of key channels rather than
keep [BT, K] tiles for it: a branch that needs them costs registers on every chunk, taken or not (sm_90 compiles
showed the spills). The chunk-parallel backward's sub-chunked gradients (bwd_subchunk) take the same factors, and
these scores for dv: subchunk_backward.py.
"""

import triton
import triton.language as tl

from decaylab.ops.triton.blocks import RCP_LN2, load_raw_gates, load_tile


@triton.jit
def _pick(B, idx):
    """[NC, N]: row idx[r] of the [NC, N] tile B for each r, 0 where idx[r] matches no row."""
    sel = idx[:, None] == tl.arange(0, B.shape[0])[None, :]  # [NC, NC]
    return tl.sum(tl.where(sel[:, :, None], B[None, :, :], 0.0), axis=1)


@triton.jit
def _scaled(x3, f, BT: tl.constexpr, K: tl.constexpr):
    """The [NC, BC, K] tile x3 times its sub-chunk's [NC, K] factor, as [BT, K] rows."""
    return tl.reshape(x3 * f[:, None, :], [BT, K])


@triton.jit
def _dot_t(a, b, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """a b^T; on fp32 operands (tf32 / ieee) where fp16 could not hold the diagonal's factors (as intra.py)."""
    if INTRA_FP32:
        return tl.dot(a, tl.trans(b), input_precision=PREC)
    else:
        return tl.dot(a.to(DT), tl.trans(b.to(DT)), input_precision=PREC)


@triton.jit
def subchunk_exact_diagonal(q, k, g, tok, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                            K: tl.constexpr, KB: tl.constexpr):
    """The diagonal blocks of the scores (fp32 [BT, BT], without scale), element-wise: for a chunk with a sub-chunk
    past SPAN_LIMIT. Key row j of every sub-chunk at a time, exponents masked to <= 0 before the exp2 (as
    intra.vector_scores' exact path), over blocks of KB key channels of q, k and g reloaded from memory: this rare
    path holds [BT, KB] tiles, not [BT, K] ones, beside the state."""
    NC: tl.constexpr = BT // BC
    b = tl.arange(0, BC)
    rows = tl.arange(0, BT)
    A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(K // KB):
        q3 = tl.reshape(load_tile(q, tok, valid, i_h, H, K, KB, i_k), [NC, BC, KB]).to(tl.float32)
        k3 = tl.reshape(load_tile(k, tok, valid, i_h, H, K, KB, i_k), [NC, BC, KB]).to(tl.float32)
        g3 = tl.reshape(load_tile(g, tok, valid, i_h, H, K, KB, i_k), [NC, BC, KB])
        Gl = tl.cumsum(g3.to(tl.float32), axis=1) * RCP_LN2
        for j in range(BC):
            at_j = (b == j)[None, :, None]
            k_j = tl.sum(tl.where(at_j, k3, 0.0), axis=1)  # [NC, KB]
            G_j = tl.sum(tl.where(at_j, Gl, 0.0), axis=1)
            decay = tl.exp2(tl.where((b >= j)[None, :, None], Gl - G_j[:, None, :], float("-inf")))
            a = tl.reshape(tl.sum(q3 * k_j[:, None, :] * decay, axis=2), [BT])  # column j of each diagonal block
            A += tl.where(rows[None, :] == (rows // BC * BC + j)[:, None], a[:, None], 0.0)
    return A


@triton.jit
def _level(qg, kg, B, B_prev, sub, rows_sub, HALF: tl.constexpr, BT: tl.constexpr, K: tl.constexpr,
           INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The off-diagonal blocks of one level: in each group of 2 * HALF sub-chunks, the right half's rows against the
    left half's columns, around the boundary between the halves."""
    q_f, k_f = level_factors(B, B_prev, sub, HALF)
    part = _dot_t(_scaled(qg, q_f, BT, K), _scaled(kg, k_f, BT, K), INTRA_FP32, DT, PREC)
    return in_groups(part, rows_sub, HALF)


@triton.jit
def level_factors(B, B_prev, sub, HALF: tl.constexpr):
    """The [NC, K] factors of one level: 2^(B_{r-1} - B_b) on the right halves' rows, 2^(B_b - B_c) on the left
    halves' columns (b: the boundary between the halves), 0 elsewhere (2^-inf, never inf * 0)."""
    half = sub // HALF
    right = half % 2 == 1
    q_f = tl.exp2(tl.where(right[:, None], B_prev - _pick(B, half * HALF - 1), float("-inf")))
    k_f = tl.exp2(tl.where(right[:, None], float("-inf"), _pick(B, (half + 1) * HALF - 1) - B))
    return q_f, k_f


@triton.jit
def in_groups(x, rows_sub, HALF: tl.constexpr):
    """The [BT, BT] tile x where row and column lie in the same group of 2 * HALF sub-chunks, else 0."""
    group = rows_sub // (2 * HALF)
    return tl.where(group[:, None] == group[None, :], x, 0.0)


@triton.jit
def _decayed(q, k, g_t, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr):
    """qg, kg fp32 [NC, BC, K] and the sub-chunk totals t and ends B, fp32 [NC, K]."""
    NC: tl.constexpr = BT // BC
    Gl = tl.cumsum(tl.reshape(g_t.to(tl.float32), [NC, BC, K]), axis=1) * RCP_LN2
    t = tl.min(Gl, axis=1)  # [NC, K]: the last row (a cumsum of values <= 0), so that 2^(t - Gl) <= 1
    qg = tl.reshape(q, [NC, BC, K]).to(tl.float32) * tl.exp2(Gl)
    kg = tl.reshape(k, [NC, BC, K]).to(tl.float32) * tl.exp2(t[:, None, :] - Gl)
    return qg, kg, t, tl.cumsum(t, axis=0)


@triton.jit
def subchunk_decays(g_t, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr):
    """Of a chunk's raw log decays g_t [BT, K]: 2^Gl and 2^(t - Gl), fp32 [NC, BC, K] (both <= 1), and the
    sub-chunk totals t and ends B, fp32 [NC, K]: _decayed's factors without q and k (the backward's, which applies
    them to other tiles too)."""
    NC: tl.constexpr = BT // BC
    Gl = tl.cumsum(tl.reshape(g_t.to(tl.float32), [NC, BC, K]), axis=1) * RCP_LN2
    t = tl.min(Gl, axis=1)  # [NC, K]: the last row (a cumsum of values <= 0), so that 2^(t - Gl) <= 1
    return tl.exp2(Gl), tl.exp2(t[:, None, :] - Gl), t, tl.cumsum(t, axis=0)


@triton.jit
def subchunk_intra(q_t, k_t, g, tok, valid, i_h, H: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                   K: tl.constexpr, SPAN_LIMIT: tl.constexpr, INTRA_FP32: tl.constexpr, DT: tl.constexpr,
                   PREC: tl.constexpr):
    """For one chunk (tokens tok, rows valid, head i_h of H; q_t, k_t its [BT, K] tiles in the input dtype, g the
    log decays): the masked scores A without scale, fp32 [BT, BT]; the inter-chunk operands q * 2^G and
    k * 2^(G_last - G) in DT; G_last [K], the chunk's decay; and whether every sub-chunk's decay is within
    SPAN_LIMIT. Where one is not, A lacks its diagonal blocks: subchunk_exact_diagonal makes them, after this has
    returned, when neither qg nor kg is live (the dots come first here, the inter-chunk operands end qg and kg)."""
    NC: tl.constexpr = BT // BC
    qg, kg, t, B = _decayed(q_t, k_t, load_raw_gates(g, tok, valid, i_h, H, K, K, 0, True), BT, BC, K)
    sub = tl.arange(0, NC)
    B_prev = _pick(B, sub - 1)
    rows = tl.arange(0, BT)
    rows_sub = rows // BC  # the sub-chunk of each row (and column)
    # off-diagonal blocks, one level of the hierarchy per dot
    A = tl.zeros([BT, BT], dtype=tl.float32)
    for level in tl.static_range(NC):
        if (1 << level) < NC:
            A += _level(qg, kg, B, B_prev, sub, rows_sub, 1 << level, BT, K, INTRA_FP32, DT, PREC)
    fits = tl.max(tl.max(-t, axis=1), axis=0) <= SPAN_LIMIT
    if fits:
        D = _dot_t(_scaled(qg, tl.exp2(-t), BT, K), tl.reshape(kg, [BT, K]), INTRA_FP32, DT, PREC)
        A += tl.where((rows_sub[:, None] == rows_sub[None, :]) & (rows[:, None] >= rows[None, :]), D, 0.0)
    G_last = tl.sum(tl.where(sub[:, None] == NC - 1, B, 0.0), axis=0)
    q_start = _scaled(qg, tl.exp2(B_prev), BT, K).to(DT)
    k_end = _scaled(kg, tl.exp2(G_last[None, :] - B), BT, K).to(DT)
    return A, q_start, k_end, G_last, fits
