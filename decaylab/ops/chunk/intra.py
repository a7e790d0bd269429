"""Intra-chunk decayed scores A and their backward, with every exponent <= 0.

Within one chunk of C tokens (log decays ``ld``, queries ``q``, keys ``k``):

    A[i, j] = sum_c q[i, c] * k[j, c] * exp(seg_c(i, j))   for j <= i,   0 above the diagonal,
    seg_c(i, j) = sum_{t=j+1..i} ld[t, c]                   (<= 0, zero on the diagonal).

Scalar decay (one ld per token): seg does not depend on c, so A = (q k^T) * exp(seg), one matmul and a
C x C decay matrix built from masked segment sums (mask before exp: the upper triangle is exp(-inf) = 0).

Vector decay (one ld per key channel): exp(seg_c(i, j)) is a different C x C matrix per channel. Materialising
it costs C*K per token, so instead the lower triangle is covered by halving: inside every aligned block of
2s tokens, the queries of the second half face the keys of the first half across the boundary r between them,
and there the decay factors split into two bounded factors,

    exp(seg(i, j)) = exp(seg(i, r-1)) * exp(seg(r-1, j)),    i >= r > j,    both exponents <= 0,

so that block is one matmul of (q * exp(inclusive cumsum of ld from r)) against
(k * exp(exclusive reverse cumsum of ld down to r)). Every pair j < i is in exactly one such block for
s = C/2, C/4, ..., 1, and the diagonal i = j carries no decay, so A costs log2(C) matmul levels and 2 K
exponentials per token per level. The cumulative sums restart at each block, so each exponent is a sum of only
the decays it spans (no difference of long prefix sums, no cancellation).
"""

from __future__ import annotations

import torch


def suffix_sums(x: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Exclusive reverse cumulative sum: out[j] = sum_{t > j} x[t] along ``dim`` (the last entry is 0).

    Built from the tail only (no total-minus-prefix), so small tails after a large entry stay exact.
    """
    n = x.shape[dim]
    out = torch.zeros_like(x)
    if n > 1:
        tail = x.narrow(dim, 1, n - 1)
        out.narrow(dim, 0, n - 1).copy_(tail.flip(dim).cumsum(dim).flip(dim))
    return out


def segment_decay(ld: torch.Tensor) -> torch.Tensor:
    """exp(seg(i, j)) for a scalar decay: ``[..., C]`` log decays -> ``[..., C, C]``, zero above the diagonal."""
    C = ld.shape[-1]
    ones = torch.ones(C, C, dtype=torch.bool, device=ld.device)
    # x[..., t, j] = ld[..., t] where t > j, else 0; summing over t <= i gives seg(i, j).
    seg = ld.unsqueeze(-1).expand(*ld.shape, C).masked_fill(~ones.tril(-1), 0.0).cumsum(dim=-2)  # [..., i, j]
    return seg.masked_fill(~ones.tril(), float("-inf")).exp()  # j > i: exp(-inf) = 0, never an overflow


def scalar_scores(q: torch.Tensor, k: torch.Tensor, ld: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A for scalar decay. q, k: ``[..., C, K]``; ld: ``[..., C]``. Returns (A, decay matrix L), ``[..., C, C]``."""
    decay = segment_decay(ld)  # [..., C, C]
    return (q @ k.transpose(-1, -2)) * decay, decay


def scalar_scores_backward(
    dA: torch.Tensor, q: torch.Tensor, k: torch.Tensor, decay: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of q and k through A = (q k^T) * L, given dA ``[..., C, C]``."""
    dP = dA * decay  # [..., C, C]; L is zero above the diagonal, so this also applies the causal mask
    return dP @ k, dP.transpose(-1, -2) @ q


def _halves(x: torch.Tensor, s: int) -> torch.Tensor:
    """``[Z, N, C, D]`` -> ``[Z, N, C/(2s), 2, s, D]`` view: index 0 = first half (keys), 1 = second (queries)."""
    Z, N, C, D = x.shape
    return x.view(Z, N, C // (2 * s), 2, s, D)


def _block_view(A: torch.Tensor, s: int) -> torch.Tensor:
    """The level-s blocks of a ``[Z, N, C, C]`` matrix as a writable ``[Z, N, C/(2s), s, s]`` view.

    Block m holds rows (queries) 2ms+s .. 2ms+2s-1 and columns (keys) 2ms .. 2ms+s-1.
    """
    Z, N, C, _ = A.shape
    M = C // (2 * s)
    blocks = A.view(Z, N, M, 2, s, M, 2, s).diagonal(dim1=2, dim2=5)  # [Z, N, 2, s, 2, s, M]
    return blocks[:, :, 1, :, 0].permute(0, 1, 4, 2, 3)  # [Z, N, M, s(query), s(key)]


def _level_factors(ld: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decay factors across the level-s boundaries: (query side ``[Z, N, M, s, K]``, key side, same shape)."""
    ld_pairs = _halves(ld, s)
    into_queries = ld_pairs[:, :, :, 1].cumsum(dim=-2).exp()  # seg(i, r-1): from the boundary to query i
    from_keys = suffix_sums(ld_pairs[:, :, :, 0], dim=-2).exp()  # seg(r-1, j): from key j to the boundary
    return into_queries, from_keys


def _levels(C: int) -> list[int]:
    if C & (C - 1):
        raise ValueError(f"vector decay needs a power-of-two chunk size; got {C}")
    return [C >> (e + 1) for e in range(C.bit_length() - 1)]  # C/2, C/4, ..., 1


def vector_scores(q: torch.Tensor, k: torch.Tensor, ld: torch.Tensor) -> torch.Tensor:
    """A for vector decay. q, k, ld: ``[Z, N, C, K]`` with C a power of two. Returns ``[Z, N, C, C]``."""
    Z, N, C, K = q.shape
    A = q.new_zeros(Z, N, C, C)
    A.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))  # i = j: no decay
    for s in _levels(C):
        into_queries, from_keys = _level_factors(ld, s)
        q_scaled = _halves(q, s)[:, :, :, 1] * into_queries  # [Z, N, M, s, K]
        k_scaled = _halves(k, s)[:, :, :, 0] * from_keys  # [Z, N, M, s, K]
        _block_view(A, s).copy_(q_scaled @ k_scaled.transpose(-1, -2))
    return A


def vector_scores_backward(
    dA: torch.Tensor, q: torch.Tensor, k: torch.Tensor, ld: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of q and k through :func:`vector_scores`, given dA ``[Z, N, C, C]`` (upper triangle ignored).

    The same halving: per level, dq_scaled = dA_block k_scaled and dk_scaled = dA_block^T q_scaled, then the
    bounded factors are applied again. The log-decay gradient is not formed here: it follows from dq and dk
    (see :mod:`decaylab.ops.chunk.function`).
    """
    Z, N, C, K = q.shape
    diag = dA.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [Z, N, C, 1]
    dq, dk = diag * k, diag * q
    for s in _levels(C):
        into_queries, from_keys = _level_factors(ld, s)
        q_scaled = _halves(q, s)[:, :, :, 1] * into_queries
        k_scaled = _halves(k, s)[:, :, :, 0] * from_keys
        d_block = _block_view(dA, s)  # [Z, N, M, s, s]
        _halves(dq, s)[:, :, :, 1] += (d_block @ k_scaled) * into_queries
        _halves(dk, s)[:, :, :, 0] += (d_block.transpose(-1, -2) @ q_scaled) * from_keys
    return dq, dk
