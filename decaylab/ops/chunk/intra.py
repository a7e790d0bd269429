"""Exact segment sums of log decays, and the intra-chunk decayed scores A with their backward.

Within one chunk of C tokens (log decays ``ld``, queries ``q``, keys ``k``):

    A[i, j] = sum_c q[i, c] * k[j, c] * exp(seg_c(i, j))   for j <= i,   0 above the diagonal,
    seg_c(i, j) = sum_{t=j+1..i} ld[t, c]                   (<= 0, zero on the diagonal).

Segment sums: every exponent used anywhere is a sum of the decays of one segment, computed as a product with
a constant 0/1 matrix (``W^T ld``). That adds exactly the decays inside the segment and nothing else, so no
sum is ever a difference of two long prefix sums (no cancellation after a -1e3 step) and every exponent is
<= 0. Log decays are ``[Z, N, C, D]`` (Z = B*H sequences, N chunks, D = 1 or K).

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
    ``halves:b`` [b, b]: ``halves`` for 2s = C repeated along the diagonal b / C times (b a multiple of C).
    ``suffix`` [C, C]: column j sums t >= j (to the chunk end, inclusive).
    ``pairs``  [C, C*C]: column i*C + j sums j < t <= i (empty, i.e. 0, when j >= i).
    """
    t = torch.arange(C, device=device)
    if kind.startswith("halves:"):
        repeat = int(kind.split(":")[1]) // C
        return torch.block_diag(*[_segment_matrix("halves", C, dtype, device)] * repeat)
    if kind == "suffix":
        return (t[:, None] >= t[None, :]).to(dtype)  # column j sums t >= j
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


def segment_sums(ld: torch.Tensor, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``W^T ld`` over the token axis: ld ``[G, C, D]`` -> ``[G, W.shape[1], D]``, one matrix product."""
    G, C, D = ld.shape
    if D == 1:  # a row per sequence: one plain matrix product
        rows = torch.matmul(ld.view(G, C), W, out=None if out is None else out.view(G, -1))
        return rows.view(G, -1, 1)
    return torch.matmul(W.transpose(0, 1), ld, out=out)


def chunk_decays(ld: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(sum_{t<=i} ld_t) and exp(sum_{t>j} ld_t) inside each chunk, as ``[G, C, D]`` views of ``out``.

    ld: ``[G, C, D]``; out: a ``[G, 2C, D]`` buffer.
    """
    C = ld.shape[1]
    E = segment_sums(ld, _segment_matrix("chunk", C, ld.dtype, ld.device), out=out).exp_()
    return E[:, :C], E[:, C:]


def scalar_scores(q, k, ld, A, decay) -> None:
    """A = (q k^T) * L for scalar decay, written into ``A`` and ``decay`` (L), both ``[G, C, C]``.

    q, k: ``[G, C, K]``; ld: ``[G, C, 1]``.
    """
    G, C, _ = ld.shape
    torch.matmul(ld.view(G, C), _segment_matrix("pairs", C, ld.dtype, ld.device), out=decay.view(G, C * C))
    upper = torch.ones(C, C, dtype=torch.bool, device=ld.device).triu(1)
    decay.masked_fill_(upper, float("-inf")).exp_()  # j > i: exp(-inf) = 0
    torch.matmul(q, k.transpose(-1, -2), out=A).mul_(decay)


def scalar_scores_backward(dA, q, k, decay, dq, dk) -> None:
    """Gradients of q and k through A = (q k^T) * L, given dA ``[G, C, C]`` (overwritten), into dq and dk."""
    dP = dA.mul_(decay)  # L is zero above the diagonal, so this also applies the causal mask
    torch.matmul(dP, k, out=dq)
    torch.matmul(dP.transpose(-1, -2), q, out=dk)


# Level matrices are applied to blocks of at least this many tokens: tiny matrix products cost more than
# the zeros a block-diagonal matrix multiplies.
MIN_SEGMENT_BLOCK = 16
# Levels with halves this short multiply their tiny blocks elementwise: a batched matrix product of 1x1 or
# 2x2 matrices is all call overhead.
ELEMENTWISE_MAX_HALF = 2


def _halves(x: torch.Tensor, s: int) -> torch.Tensor:
    """``[G, C, K]`` -> ``[G, C/(2s), 2, s, K]`` view: index 0 = first half (keys), 1 = second half (queries)."""
    G, C, K = x.shape
    return x.view(G, C // (2 * s), 2, s, K)


def _block_view(A: torch.Tensor, s: int) -> torch.Tensor:
    """The level-s blocks of a ``[G, C, C]`` matrix as a writable ``[G, C/(2s), s, s]`` view.

    Block m holds rows (queries) 2ms+s .. 2ms+2s-1 and columns (keys) 2ms .. 2ms+s-1.
    """
    G, C, _ = A.shape
    M = C // (2 * s)
    blocks = A.view(G, M, 2, s, M, 2, s).diagonal(dim1=1, dim2=4)  # [G, 2, s, 2, s, M]
    return blocks[:, 1, :, 0].permute(0, 3, 1, 2)  # [G, M, s(query), s(key)]


def _levels(C: int) -> list[int]:
    if C & (C - 1):
        raise ValueError(f"vector decay needs a power-of-two chunk size; got {C}")
    return [C >> (e + 1) for e in range(C.bit_length() - 1)]  # C/2, C/4, ..., 1


class Workspace:
    """Buffers for the vector-decay levels of one tile of G chunks, reused by every level and every tile.

    Fresh tensors of this size are page-faulted in by the OS on every use, which made the levels several times
    slower than their arithmetic; a tile that is smaller than G uses views of the first chunks.
    """

    def __init__(self, like: torch.Tensor, G: int, backward: bool):
        C, K = like.shape[-2:]
        self.factor, self.scaled = like.new_empty(G, C, K), like.new_empty(G, C, K)
        self.blocks = like.new_empty(G * C * C // 2)  # level scores or their gradients, [G, M, s, s]
        self.d_scaled = like.new_empty(G, C // 2, K) if backward else None  # [G, M, s, K]

    def level(self, q, k, ld, s):
        """Level-s factors and scaled operands, ``[G, C, K]`` in token order.

        factor: exp(sum of ld from the boundary to the token) on query halves and exp(sum of ld after the token
        up to the boundary) on key halves (s = 1: key factors are exp(0) = 1 and are not stored).
        scaled: q * factor on query halves, k * factor on key halves.
        """
        G, C, K = ld.shape
        factor, scaled = self.factor[:G], self.scaled[:G]
        if s == 1:  # one-token halves: the query factor is the token's own decay
            torch.exp(ld, out=factor)
        else:
            b = min(C, max(2 * s, MIN_SEGMENT_BLOCK))  # tokens per block-diagonal matrix product
            W = _segment_matrix(f"halves:{b}", 2 * s, ld.dtype, ld.device)  # [b, b]
            torch.matmul(W.transpose(0, 1), ld.reshape(G * C // b, b, K), out=factor.view(G * C // b, b, K))
            factor.exp_()
        queries, keys = _halves(scaled, s)[:, :, 1], _halves(scaled, s)[:, :, 0]
        torch.mul(_halves(q, s)[:, :, 1], _halves(factor, s)[:, :, 1], out=queries)
        if s == 1:
            keys.copy_(_halves(k, s)[:, :, 0])
        else:
            torch.mul(_halves(k, s)[:, :, 0], _halves(factor, s)[:, :, 0], out=keys)
        return _halves(factor, s), queries, keys

    def blocks_of(self, G: int, s: int, C: int) -> torch.Tensor:
        return self.blocks[: G * C * s // 2].view(G, C // (2 * s), s, s)


def _product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Batched ``a @ b`` into ``out``; tiny matrices (s <= ELEMENTWISE_MAX_HALF) by broadcasting instead."""
    if min(a.shape[-2], b.shape[-1], a.shape[-1]) > ELEMENTWISE_MAX_HALF:
        return torch.matmul(a, b, out=out)
    return torch.sum(a.unsqueeze(-1) * b.unsqueeze(-3), dim=-2, out=out)


def vector_scores(q, k, ld, A, work: Workspace) -> None:
    """A for vector decay, written into ``A`` ``[G, C, C]``. q, k, ld: ``[G, C, K]``, C a power of two."""
    G, C, _ = q.shape
    A.zero_()
    A.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))  # i = j: no decay
    for s in _levels(C):
        _, queries, keys = work.level(q, k, ld, s)  # [G, M, s, K] each
        _block_view(A, s).copy_(_product(queries, keys.transpose(-1, -2), out=work.blocks_of(G, s, C)))


def vector_scores_backward(dA, q, k, ld, dq, dk, work: Workspace) -> None:
    """Gradients of q and k through :func:`vector_scores`, given dA ``[G, C, C]`` (upper triangle ignored).

    The same halving: per level, d(scaled q) = dA_block (scaled k) and d(scaled k) = dA_block^T (scaled q),
    each multiplied by its bounded factor again. Written into dq and dk ``[G, C, K]``. The log-decay gradient
    is not formed here: it follows from dq and dk (see :mod:`decaylab.ops.chunk.function`).
    """
    G, C, K = q.shape
    diag = dA.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [G, C, 1]
    torch.mul(diag, k, out=dq)
    torch.mul(diag, q, out=dk)
    for s in _levels(C):
        factors, queries, keys = work.level(q, k, ld, s)
        d_scores = work.blocks_of(G, s, C)
        d_scores.copy_(_block_view(dA, s))  # [G, M, s, s], contiguous for the matrix products
        d_scaled = work.d_scaled[:G].view(G, C // (2 * s), s, K)
        _product(d_scores, keys, out=d_scaled)
        _halves(dq, s)[:, :, 1].addcmul_(d_scaled, factors[:, :, 1])
        _product(d_scores.transpose(-1, -2), queries, out=d_scaled)
        if s == 1:
            _halves(dk, s)[:, :, 0] += d_scaled
        else:
            _halves(dk, s)[:, :, 0].addcmul_(d_scaled, factors[:, :, 0])
