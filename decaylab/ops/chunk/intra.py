"""Exact segment sums of log decays, and the intra-chunk decayed scores A with their backward.

Within one chunk of C tokens (log decays ``ld``, queries ``q``, keys ``k``):

    A[i, j] = sum_c q[i, c] * k[j, c] * exp(seg_c(i, j))   for j <= i,   0 above the diagonal,
    seg_c(i, j) = sum_{t=j+1..i} ld[t, c]                   (<= 0, zero on the diagonal).

Segment sums: every exponent used anywhere is a sum of the decays of one segment, computed as a product with
a constant 0/1 matrix (``ld @ W``). That adds exactly the decays inside the segment and nothing else, so no
sum is ever a difference of two long prefix sums (no cancellation after a -1e3 step) and every exponent is
<= 0. The log decays travel tokens-last, ``[Z, N, D, C]``, so each such product is one plain matrix product.

Scalar decay (D = 1): seg does not depend on c, so A = (q k^T) * exp(seg), one matmul and a C x C decay
matrix (the upper triangle is set to -inf before the exponential: it becomes 0, never inf).

Vector decay (D = K): exp(seg_c(i, j)) is a different C x C matrix per channel; materialising it costs C*K
per token. Instead the lower triangle is covered by halving: inside every aligned block of 2s tokens, the
queries of the second half face the keys of the first half across the boundary r between them, where

    exp(seg(i, j)) = exp(seg(i, r-1)) * exp(seg(r-1, j)),    i >= r > j,    both exponents <= 0,

so that block is one matmul of (q * exp(sum of ld from r to i)) against (k * exp(sum of ld after j up to
r-1)). Every pair j < i lies in exactly one such block for s = C/2, C/4, ..., 1, and the diagonal i = j has no
decay, so A costs log2(C) levels of batched matmuls and K exponentials per token per level.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=64)
def _segment_matrix(kind: str, C: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Constant 0/1 matrices W: (x @ W)[col] = sum of x over the segment that column stands for.

    ``chunk``  [C, 2C]: columns i < C sum t <= i (from the chunk start), columns C + j sum t > j (to its end).
    ``halves`` [C, C] with C = 2s: column j < s sums j < t < s (key j to the boundary), column s + i sums
               s <= t <= s + i (the boundary to query i).
    ``pairs``  [C, C*C]: column i*C + j sums j < t <= i (empty, i.e. 0, when j >= i).
    """
    t = torch.arange(C, device=device)
    if kind == "chunk":
        W = torch.cat([t[:, None] <= t[None, :], t[:, None] > t[None, :]], dim=1)
    elif kind == "halves":
        s = C // 2
        first, second = t < s, t >= s
        keys = first[:, None] & first[None, :] & (t[:, None] > t[None, :])  # rows t, columns j
        queries = second[:, None] & second[None, :] & (t[:, None] <= t[None, :])  # rows t, columns s + i
        W = torch.where(first[None, :], keys, queries)
    elif kind == "pairs":
        W = (t[:, None, None] > t[None, None, :]) & (t[:, None, None] <= t[None, :, None])  # [t, i, j]
        W = W.reshape(C, C * C)
    else:
        raise ValueError(f"unknown segment matrix {kind!r}")
    return W.to(dtype)


def chunk_decays(ldT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decays relative to the chunk boundaries, from tokens-last log decays ``[Z, N, D, C]``.

    Returns exp(sum_{t<=i} ld_t) and exp(sum_{t>j} ld_t) as ``[Z, N, C, D]`` (strided views) and
    exp(sum_t ld_t) as ``[Z, N, D]``.
    """
    Z, N, D, C = ldT.shape
    E = (ldT.reshape(-1, C) @ _segment_matrix("chunk", C, ldT.dtype, ldT.device)).exp_().view(Z, N, D, 2 * C)
    return E[..., :C].transpose(-1, -2), E[..., C:].transpose(-1, -2), ldT.sum(-1).exp()


def scalar_scores(q: torch.Tensor, k: torch.Tensor, ldT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A for scalar decay. q, k ``[Z, N, C, K]``; ldT ``[Z, N, 1, C]``. Returns (A, decay matrix), ``[Z, N, C, C]``."""
    Z, N, _, C = ldT.shape
    seg = (ldT.reshape(Z * N, C) @ _segment_matrix("pairs", C, ldT.dtype, ldT.device)).view(Z, N, C, C)
    upper = torch.ones(C, C, dtype=torch.bool, device=ldT.device).triu(1)
    decay = seg.masked_fill_(upper, float("-inf")).exp_()  # j > i: exp(-inf) = 0
    return (q @ k.transpose(-1, -2)).mul_(decay), decay


def scalar_scores_backward(
    dA: torch.Tensor, q: torch.Tensor, k: torch.Tensor, decay: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of q and k through A = (q k^T) * L, given dA ``[..., C, C]``."""
    dP = dA.mul_(decay)  # [..., C, C]; L is zero above the diagonal, so this also applies the causal mask
    return dP @ k, dP.transpose(-1, -2) @ q


def _halves(x: torch.Tensor, s: int) -> torch.Tensor:
    """``[Z, N, C, K]`` -> ``[Z, N, C/(2s), 2, s, K]`` view: index 0 = first half (keys), 1 = second (queries)."""
    Z, N, C, K = x.shape
    return x.view(Z, N, C // (2 * s), 2, s, K)


def _block_view(A: torch.Tensor, s: int) -> torch.Tensor:
    """The level-s blocks of a ``[Z, N, C, C]`` matrix as a writable ``[Z, N, C/(2s), s, s]`` view.

    Block m holds rows (queries) 2ms+s .. 2ms+2s-1 and columns (keys) 2ms .. 2ms+s-1.
    """
    Z, N, C, _ = A.shape
    M = C // (2 * s)
    blocks = A.view(Z, N, M, 2, s, M, 2, s).diagonal(dim1=2, dim2=5)  # [Z, N, 2, s, 2, s, M]
    return blocks[:, :, 1, :, 0].permute(0, 1, 4, 2, 3)  # [Z, N, M, s(query), s(key)]


def _levels(C: int) -> list[int]:
    if C & (C - 1):
        raise ValueError(f"vector decay needs a power-of-two chunk size; got {C}")
    return [C >> (e + 1) for e in range(C.bit_length() - 1)]  # C/2, C/4, ..., 1


def _level(q, k, ldT, s):
    """Level-s factors and scaled operands, all ``[Z, N, C, K]`` in token order.

    factor: exp(sum of ld from the boundary to the token) on query halves, (from the token to the boundary) on
    key halves. scaled: q * factor on query halves, k * factor on key halves.
    """
    Z, N, K, C = ldT.shape
    if s == 1:  # a one-token half: the query factor is its own decay, the key factor is exp(0) = 1
        factor = ldT.exp()
    else:
        W = _segment_matrix("halves", 2 * s, ldT.dtype, ldT.device)
        factor = (ldT.reshape(-1, 2 * s) @ W).exp_()
    factor = factor.view(Z, N, K, C).transpose(-1, -2)  # [Z, N, C, K] (strided view)
    scaled = torch.empty_like(q)
    torch.mul(_halves(q, s)[:, :, :, 1], _halves(factor, s)[:, :, :, 1], out=_halves(scaled, s)[:, :, :, 1])
    if s == 1:
        _halves(scaled, s)[:, :, :, 0] = _halves(k, s)[:, :, :, 0]
    else:
        torch.mul(_halves(k, s)[:, :, :, 0], _halves(factor, s)[:, :, :, 0], out=_halves(scaled, s)[:, :, :, 0])
    return factor, scaled


def vector_scores(q: torch.Tensor, k: torch.Tensor, ldT: torch.Tensor) -> torch.Tensor:
    """A for vector decay. q, k ``[Z, N, C, K]``, ldT ``[Z, N, K, C]``, C a power of two. Returns ``[Z, N, C, C]``."""
    Z, N, C, K = q.shape
    A = q.new_zeros(Z, N, C, C)
    A.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))  # i = j: no decay
    for s in _levels(C):
        _, scaled = _level(q, k, ldT, s)
        pairs = _halves(scaled, s)
        _block_view(A, s).copy_(pairs[:, :, :, 1] @ pairs[:, :, :, 0].transpose(-1, -2))  # [Z, N, M, s, s]
    return A


def vector_scores_backward(
    dA: torch.Tensor, q: torch.Tensor, k: torch.Tensor, ldT: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of q and k through :func:`vector_scores`, given dA ``[Z, N, C, C]`` (upper triangle ignored).

    The same halving: per level, d(scaled q) = dA_block (scaled k) and d(scaled k) = dA_block^T (scaled q),
    each multiplied by its bounded factor again. The log-decay gradient is not formed here: it follows from
    dq and dk (see :mod:`decaylab.ops.chunk.function`).
    """
    diag = dA.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [Z, N, C, 1]
    dq, dk = diag * k, diag * q
    for s in _levels(q.shape[2]):
        factor, scaled = _level(q, k, ldT, s)
        pairs, factors = _halves(scaled, s), _halves(factor, s)
        d_block = _block_view(dA, s)  # [Z, N, M, s, s]
        _halves(dq, s)[:, :, :, 1].addcmul_(d_block @ pairs[:, :, :, 0], factors[:, :, :, 1])
        d_keys = d_block.transpose(-1, -2) @ pairs[:, :, :, 1]
        if s == 1:
            _halves(dk, s)[:, :, :, 0] += d_keys
        else:
            _halves(dk, s)[:, :, :, 0].addcmul_(d_keys, factors[:, :, :, 0])
    return dq, dk
