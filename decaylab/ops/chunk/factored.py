"""The fast intra-chunk scores for vector decay: one matrix product per chunk, factored around its middle token.

Within one chunk (queries q, keys k, log decays ld, ``[G, C, K]``; G the running sum of ld), vector decay needs

    A[i, j] = sum_c q_ic k_jc exp(G_ic - G_jc)      for j <= i,   0 above the diagonal.

Measured from the chunk's middle token r = C/2, with the exact segment sum e_i = G_i - G_r (per channel),

    exp(G_ic - G_jc) = exp(e_ic) * exp(-e_jc),   so   A = mask_{j<=i}( (q * exp(e)) (k * exp(-e))^T ),

one batched matmul per chunk, as for scalar decay, instead of log2(C) levels of small ones (the halving path).
The price: the factors are no longer bounded by 1 (exp(e_i) > 1 for i before r, exp(-e_j) > 1 for j after it),
so the path is used only for chunks whose every |e| <= SPAN_LIMIT of the compute dtype:

* float32, 40 nats. Factors stay below e^40 ~ 2e17 (no overflow for any realistic q, k), and the rounding of a
  product exp(a) exp(b) with a + b = G_i - G_j is about u (|a| + |b|) relative (u = 6e-8 the unit roundoff)
  against u |a + b| on the exact path: at most 80 u ~ 5e-6, on the entries near the diagonal of a chunk with
  strong decay, and far less in total. It covers typical decays: logsigmoid(randn) averages -0.81 per token,
  so the 32 tokens either side of the middle of a 64-token chunk sum to about -26 +- 3 per channel, and the
  largest of 64 channels stays below 40 (none of 512 such chunks went over; 19 % went over 35).
* float64, 400 nats: at most 800 u ~ 1e-13 relative; e^400 ~ 5e173 is far from the float64 limit.

Entries above the diagonal are exp(G_i - G_j) with j > i, up to e^(2 SPAN_LIMIT) |q||k|, and may overflow to
inf or NaN: they are replaced by 0 with a select (``tril_``), never multiplied by a 0 mask. In the backward
the upstream dA is masked the same way before it meets the (finite) factors, so no inf is ever multiplied.
Chunks over the limit (log decays of -1e3, or just long strong decays) take :mod:`decaylab.ops.chunk.halving`.
"""

from __future__ import annotations

import torch

from decaylab.ops.chunk.segments import segment_matrix, segment_sums

SPAN_LIMIT = {torch.float32: 40.0, torch.float64: 400.0}


class Workspace:
    """Buffers of one tile of G chunks, reused tile after tile (a shorter tile uses leading views)."""

    def __init__(self, like: torch.Tensor, G: int):
        C, K = like.shape[-2:]
        self.exponent = like.new_empty(G, C, K)  # e, then exp(e) in place
        self.q_split = like.new_empty(G, C, K)  # q * exp(e)
        self.k_split = like.new_empty(G, C, K)  # k / exp(e) = k * exp(-e)


def exponents(ld: torch.Tensor, work: Workspace) -> torch.Tensor:
    """e = G - G_r per token and channel, ``[G, C, K]`` (a view of the workspace): one matrix product."""
    G, C, _ = ld.shape
    return segment_sums(ld, segment_matrix("reference", C, ld.dtype, ld.device), out=work.exponent[:G])


def within_limit(e: torch.Tensor) -> torch.Tensor:
    """``[G]`` bool: the chunks whose factors exp(+-e) all stay within exp(SPAN_LIMIT).

    Log decays are <= 0, so e = G - G_r falls along the chunk: its extremes are the first and the last token.
    """
    widest = torch.maximum(e[:, 0], e[:, -1].neg()).amax(-1)  # [G]
    return widest <= SPAN_LIMIT[e.dtype]  # a NaN fails and goes to the halving path


def _split(q, k, e, work: Workspace):
    """exp(e) and the split operands q * exp(e), k / exp(e); e may be the workspace's own buffer.

    Within the limit exp(e) lies in [e^-40, e^40] (float32), so dividing by it is as exact as multiplying by
    exp(-e) and saves an exponential.
    """
    G = q.shape[0]
    up = torch.exp(e, out=work.exponent[:G])
    return up, torch.mul(q, up, out=work.q_split[:G]), torch.div(k, up, out=work.k_split[:G])


def scores(q, k, e, A, work: Workspace) -> None:
    """A = mask((q * exp(e)) (k * exp(-e))^T), written into ``A`` ``[G, C, C]``; every |e| <= SPAN_LIMIT."""
    _, q_split, k_split = _split(q, k, e, work)
    # tril_ assigns zeros above the diagonal (a select): whatever overflowed there, inf or NaN, is dropped.
    torch.matmul(q_split, k_split.transpose(-1, -2), out=A).tril_()


def scores_backward(dA, q, k, e, dq, dk, work: Workspace) -> None:
    """Gradients of q and k through :func:`scores` into dq, dk; dA ``[G, C, C]`` is overwritten (masked).

    dq = (mask(dA) (k * exp(-e))) * exp(e),   dk = (mask(dA)^T (q * exp(e))) * exp(-e).
    """
    up, q_split, k_split = _split(q, k, e, work)
    dA.tril_()
    torch.matmul(dA, k_split, out=dq).mul_(up)
    torch.matmul(dA.transpose(-1, -2), q_split, out=dk).div_(up)
