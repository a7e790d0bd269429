"""Vector decay's intra-chunk pieces for a forward that walks chunks of BT tokens but builds the scores in NC = BT / BC
sub-chunks of BC tokens (ForwardPlan.subchunk): the chunk's q S and k^T v dots run at M = BT, while no exponent
factor grows with the chunk's decay span, only with a sub-chunk's.

Per chunk, with Gl the sub-chunk-local cumulative log2 decay (fp32, <= 0, non-increasing down each sub-chunk), t_r
its total over sub-chunk r and B_r = t_0 + ... + t_r the chunk-local decay at the end of sub-chunk r (B_-1 = 0),
row i of sub-chunk r has G_i = B_{r-1} + Gl_i. Two tiles carry every factor:

    qg = q * 2^Gl,   kg = k * 2^(t - Gl)           both <= |q|, |k|: keys decayed to their sub-chunk's end

and the rest are per-sub-chunk [NC, K] vectors on their rows:

    A_ij (r == c)   = (qg * 2^-t_r) . kg_j          2^-t_r <= 2^SPAN_LIMIT while sub-chunk r's decay is within it;
                                                    otherwise every diagonal block takes the exact element-wise path
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
chunk's decay.
"""

import triton
import triton.language as tl

from decaylab.ops.triton.blocks import RCP_LN2


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
def _exact_diagonal(q3, k3, Gl, BT: tl.constexpr, BC: tl.constexpr):
    """The diagonal blocks element-wise: key row j of every sub-chunk at a time, exponents masked to <= 0 before the
    exp2 (intra.vector_scores' exact path, BC steps over all sub-chunks at once)."""
    b = tl.arange(0, BC)
    rows = tl.arange(0, BT)
    cols = tl.arange(0, BT)
    A = tl.zeros([BT, BT], dtype=tl.float32)
    for j in range(BC):
        at_j = (b == j)[None, :, None]
        k_j = tl.sum(tl.where(at_j, k3, 0.0), axis=1)  # [NC, K]
        G_j = tl.sum(tl.where(at_j, Gl, 0.0), axis=1)
        decay = tl.exp2(tl.where((b >= j)[None, :, None], Gl - G_j[:, None, :], float("-inf")))
        a = tl.reshape(tl.sum(q3 * k_j[:, None, :] * decay, axis=2), [BT])  # column j of each diagonal block
        A = tl.where(cols[None, :] == (rows // BC * BC + j)[:, None], a[:, None], A)
    return A


@triton.jit
def subchunk_intra(q, k, g_t, BT: tl.constexpr, BC: tl.constexpr, K: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                   INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """For one chunk (q, k [BT, K] in the input dtype, g_t its natural-log decays [BT, K], zeros past the sequence
    end): (A, q * 2^G and k * 2^(G_last - G) in DT, G_last [K]), A the masked scores without scale, fp32 [BT, BT]."""
    NC: tl.constexpr = BT // BC
    Gl = tl.cumsum(tl.reshape(g_t.to(tl.float32), [NC, BC, K]), axis=1) * RCP_LN2
    t = tl.min(Gl, axis=1)  # [NC, K]: the last row (a cumsum of values <= 0), so that 2^(t - Gl) <= 1
    B = tl.cumsum(t, axis=0)
    sub = tl.arange(0, NC)
    B_prev = _pick(B, sub - 1)
    G_last = tl.sum(tl.where(sub[:, None] == NC - 1, B, 0.0), axis=0)
    q3 = tl.reshape(q, [NC, BC, K]).to(tl.float32)
    k3 = tl.reshape(k, [NC, BC, K]).to(tl.float32)
    qg = q3 * tl.exp2(Gl)
    kg = k3 * tl.exp2(t[:, None, :] - Gl)
    kg_rows = tl.reshape(kg, [BT, K])
    rows_sub = tl.arange(0, BT) // BC
    cols_sub = rows_sub
    # diagonal blocks
    if tl.max(tl.max(-t, axis=1), axis=0) <= SPAN_LIMIT:
        A = _dot_t(_scaled(qg, tl.exp2(tl.minimum(-t, SPAN_LIMIT)), BT, K), kg_rows, INTRA_FP32, DT, PREC)
        rows = tl.arange(0, BT)
        A = tl.where((rows_sub[:, None] == cols_sub[None, :]) & (rows[:, None] >= rows[None, :]), A, 0.0)
    else:
        A = _exact_diagonal(q3, k3, Gl, BT, BC)
    # off-diagonal blocks, one level of the hierarchy per dot
    for level in tl.static_range(NC):
        s: tl.constexpr = 1 << level
        if s < NC:
            half = sub // s
            right = half % 2 == 1
            q_f = tl.exp2(tl.where(right[:, None], B_prev - _pick(B, half * s - 1), float("-inf")))
            k_f = tl.exp2(tl.where(right[:, None], float("-inf"), _pick(B, (half + 1) * s - 1) - B))
            part = _dot_t(_scaled(qg, q_f, BT, K), _scaled(kg, k_f, BT, K), INTRA_FP32, DT, PREC)
            A += tl.where((rows_sub // (2 * s))[:, None] == (cols_sub // (2 * s))[None, :], part, 0.0)
    q_start = _scaled(qg, tl.exp2(B_prev), BT, K).to(DT)
    k_end = _scaled(kg, tl.exp2(G_last[None, :] - B), BT, K).to(DT)
    return A, q_start, k_end, G_last
