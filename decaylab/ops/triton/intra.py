"""Intra-chunk pieces of the chunked kernels: the decayed score matrix and its two input gradients.

Inside one chunk of BT tokens, with chunk-local cumulative log2 decays G (fp32, non-increasing down the rows),

    A_ij  = sum_k q_ik k_jk 2^(G_ik - G_jk)          for i >= j, else 0
    dq_i  = sum_j dA_ij k_j * 2^(G_i - G_j)           (j <= i)
    dk_j  = sum_i dA_ij q_i * 2^(G_i - G_j)           (i >= j)

Scalar decay (G is one number per row) factors exactly: A = (q k^T) * D with D_ij = 2^(G_i - G_j), masked
before the exp2 so every exponent is <= 0. Vector decay (G is a K-vector per row) has no such product form, so
the fast path splits the exponent around the per-channel midpoint R = (G_first + G_last) / 2:

    2^(G_i - G_j) = 2^(G_i - R) * 2^(R - G_j),    |G - R| <= span / 2,   span = max_k (G_first - G_last)

and runs the products on tensor cores. That is exact arithmetic, but the factors overflow once the chunk's
decay span exceeds SPAN_LIMIT (log2 units); such chunks take an exact element-wise path (one key row at a time,
exponents masked to <= 0). Typical gates (per-step log decay > -5 at BT = 16..32) never take it; hard resets
(log decay -1e3) do, and stay exact and finite.

That path costs the kernels registers (and spills) whether a chunk takes it or not. SPAN_LIMIT = 0 builds them
without it (``LaunchPlan.exact_intra=False``), for timing what it costs: a chunk past the fast path's range then
overflows (inf or NaN), so such a plan is for benchmarks on bounded decays, never for training.
"""

import triton
import triton.language as tl


@triton.jit
def _row(x, rows, j):
    """Row j of a [BT, N] register tile, as an [N] vector."""
    return tl.sum(tl.where(rows[:, None] == j, x, 0.0), axis=0)


@triton.jit
def _col(x, cols, j):
    """Column j of a [BT, BT] register tile, as a [BT] vector."""
    return tl.sum(tl.where(cols[None, :] == j, x, 0.0), axis=1)


@triton.jit
def _pair_decay(G, G_j, rows, j):
    """2^(G_i - G_j) for rows i >= j and 0 above (exponent masked first, so it never overflows)."""
    return tl.exp2(tl.where(rows[:, None] >= j, G - G_j[None, :], float("-inf")))


@triton.jit
def _split_factors(q, k, G, INTRA_FP32: tl.constexpr, DT: tl.constexpr):
    """q * 2^(G - R) and k * 2^(R - G) around the per-channel midpoint R, in the dot operand dtype."""
    R = 0.5 * (tl.max(G, axis=0) + tl.min(G, axis=0))  # [K]
    up = tl.exp2(G - R[None, :])
    q_split = q * up
    k_split = k / up
    if INTRA_FP32:  # fp16 cannot hold 2^±60; fp32 operands (tf32 / ieee dot) can
        return q_split, k_split, R
    else:
        return q_split.to(DT), k_split.to(DT), R


@triton.jit
def _span(G):
    """Largest decay (log2 units) across the chunk over all key channels."""
    return tl.max(tl.max(G, axis=0) - tl.min(G, axis=0), axis=0)


@triton.jit
def _fast_scores(q, k, G, rows, cols, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """The masked scores by the split factors (fp32 q, k; the chunk's span within SPAN_LIMIT)."""
    q_split, k_split, R = _split_factors(q, k, G, INTRA_FP32, DT)
    A = tl.dot(q_split, tl.trans(k_split), input_precision=PREC)
    return tl.where(rows[:, None] >= cols[None, :], A, 0.0)


@triton.jit
def _fast_dq(dA, k, G, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """dq by the split factors (fp32 k)."""
    R = 0.5 * (tl.max(G, axis=0) + tl.min(G, axis=0))
    up = tl.exp2(G - R[None, :])
    k_split = k / up
    if INTRA_FP32:
        return tl.dot(dA, k_split, input_precision=PREC) * up
    else:
        return tl.dot(dA.to(DT), k_split.to(DT), input_precision=PREC) * up


@triton.jit
def _fast_dk(dA, q, G, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """dk by the split factors (fp32 q)."""
    R = 0.5 * (tl.max(G, axis=0) + tl.min(G, axis=0))
    q_split = q * tl.exp2(G - R[None, :])
    down = tl.exp2(R[None, :] - G)
    if INTRA_FP32:
        return tl.dot(tl.trans(dA), q_split, input_precision=PREC) * down
    else:
        return tl.dot(tl.trans(dA).to(DT), q_split.to(DT), input_precision=PREC) * down


@triton.jit
def _fast_scores_and_dk(q, k, G, dA, rows, cols, INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """(masked scores, dk) by the split factors, sharing q's split (fp32 q, k)."""
    q_split, k_split, R = _split_factors(q, k, G, INTRA_FP32, DT)
    A = tl.dot(q_split, tl.trans(k_split), input_precision=PREC)
    A = tl.where(rows[:, None] >= cols[None, :], A, 0.0)
    down = tl.exp2(R[None, :] - G)
    if INTRA_FP32:
        dk = tl.dot(tl.trans(dA), q_split, input_precision=PREC) * down
    else:
        dk = tl.dot(tl.trans(dA).to(DT), q_split, input_precision=PREC) * down
    return A, dk


@triton.jit
def vector_scores(q, k, G, rows, cols, BT: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                  INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """Masked A_ij (without scale) for vector decay; q, k [BT, K] in the input dtype, G fp32 [BT, K]."""
    q = q.to(tl.float32)
    k = k.to(tl.float32)
    if SPAN_LIMIT == 0:  # built without the exact path (LaunchPlan.exact_intra=False)
        A = _fast_scores(q, k, G, rows, cols, INTRA_FP32, DT, PREC)
    elif _span(G) <= SPAN_LIMIT:
        A = _fast_scores(q, k, G, rows, cols, INTRA_FP32, DT, PREC)
    else:
        A = tl.zeros([BT, BT], dtype=tl.float32)
        for j in range(BT):
            k_j = _row(k, rows, j)
            G_j = _row(G, rows, j)
            a = tl.sum(q * k_j[None, :] * _pair_decay(G, G_j, rows, j), axis=1)  # [BT]
            A = tl.where(cols[None, :] == j, a[:, None], A)
    return A


@triton.jit
def vector_dq_intra(dA, k, G, rows, cols, BT: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                    INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """dq_i = sum_{j<=i} dA_ij k_j 2^(G_i - G_j); dA is masked fp32 [BT, BT]."""
    k = k.to(tl.float32)
    if SPAN_LIMIT == 0:  # built without the exact path (LaunchPlan.exact_intra=False)
        dq = _fast_dq(dA, k, G, INTRA_FP32, DT, PREC)
    elif _span(G) <= SPAN_LIMIT:
        dq = _fast_dq(dA, k, G, INTRA_FP32, DT, PREC)
    else:
        dq = tl.zeros(k.shape, dtype=tl.float32)
        for j in range(BT):
            k_j = _row(k, rows, j)
            G_j = _row(G, rows, j)
            dq += _col(dA, cols, j)[:, None] * k_j[None, :] * _pair_decay(G, G_j, rows, j)
    return dq


@triton.jit
def vector_dk_intra(dA, q, G, rows, cols, BT: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                    INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """dk_j = sum_{i>=j} dA_ij q_i 2^(G_i - G_j) alone (vector_scores_and_dk_intra without the scores, which the
    chunk-parallel backward needs only for dv); dA is masked fp32 [BT, BT]."""
    q = q.to(tl.float32)
    if SPAN_LIMIT == 0:  # built without the exact path (LaunchPlan.exact_intra=False)
        dk = _fast_dk(dA, q, G, INTRA_FP32, DT, PREC)
    elif _span(G) <= SPAN_LIMIT:
        dk = _fast_dk(dA, q, G, INTRA_FP32, DT, PREC)
    else:
        dk = tl.zeros(q.shape, dtype=tl.float32)
        for j in range(BT):
            G_j = _row(G, rows, j)
            dk_j = tl.sum(_col(dA, cols, j)[:, None] * q * _pair_decay(G, G_j, rows, j), axis=0)  # [K]
            dk = tl.where(rows[:, None] == j, dk_j[None, :], dk)
    return dk


@triton.jit
def vector_scores_and_dk_intra(q, k, G, dA, rows, cols, BT: tl.constexpr, SPAN_LIMIT: tl.constexpr,
                               INTRA_FP32: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """(A, dk) for the reverse sweep: masked scores and dk_j = sum_{i>=j} dA_ij q_i 2^(G_i - G_j)."""
    q = q.to(tl.float32)
    k = k.to(tl.float32)
    if SPAN_LIMIT == 0:  # built without the exact path (LaunchPlan.exact_intra=False)
        A, dk = _fast_scores_and_dk(q, k, G, dA, rows, cols, INTRA_FP32, DT, PREC)
    elif _span(G) <= SPAN_LIMIT:
        A, dk = _fast_scores_and_dk(q, k, G, dA, rows, cols, INTRA_FP32, DT, PREC)
    else:
        A = tl.zeros([BT, BT], dtype=tl.float32)
        dk = tl.zeros(k.shape, dtype=tl.float32)
        for j in range(BT):
            k_j = _row(k, rows, j)
            G_j = _row(G, rows, j)
            decay = _pair_decay(G, G_j, rows, j)  # [BT, K], rows i >= j
            a = tl.sum(q * k_j[None, :] * decay, axis=1)
            A = tl.where(cols[None, :] == j, a[:, None], A)
            dk_j = tl.sum(_col(dA, cols, j)[:, None] * q * decay, axis=0)  # [K]
            dk = tl.where(rows[:, None] == j, dk_j[None, :], dk)
    return A, dk


@triton.jit
def scalar_pair_decay(G, rows, cols):
    """D_ij = 2^(G_i - G_j) for i >= j, else 0; G is fp32 [BT]."""
    return tl.exp2(tl.where(rows[:, None] >= cols[None, :], G[:, None] - G[None, :], float("-inf")))
