"""The exact intra-chunk scores for vector decay, by halving: any decay, however strong.

Within one chunk (log decays ``ld``, queries ``q``, keys ``k``, ``[G, C, K]``), A[i, j] = sum_c q_ic k_jc
exp(seg_c(i, j)) for j <= i, where seg_c(i, j) = sum_{t=j+1..i} ld_tc. exp(seg) is a different C x C matrix per
channel; materialising it costs C*K per token. Instead the lower triangle is covered by halving: inside every
aligned block of 2s tokens, the queries of the second half face the keys of the first half across the boundary
r between them, where

    exp(seg(i, j)) = exp(seg(i, r-1)) * exp(seg(r-1, j)),    i >= r > j,    both exponents <= 0,

so that block is one matmul of (q * exp(sum of ld from r to i)) against (k * exp(sum of ld after j up to
r-1)). Every pair j < i lies in exactly one such block for s = C/2, C/4, ..., 1, and the diagonal i = j has no
decay, so A costs log2(C) levels of batched matmuls and K exponentials per token per level. No factor exceeds
1, so no decay is too strong for it; :mod:`decaylab.ops.chunk.factored` is the faster path for chunks whose
decay span is bounded.
"""

from __future__ import annotations

import torch

from decaylab.ops.chunk.segments import exp_, segment_matrix

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
            exp_(factor.copy_(ld))
        else:
            b = min(C, max(2 * s, MIN_SEGMENT_BLOCK))  # tokens per block-diagonal matrix product
            W = segment_matrix(f"halves:{b}", 2 * s, ld.dtype, ld.device)  # [b, b]
            torch.matmul(W.transpose(0, 1), ld.reshape(G * C // b, b, K), out=factor.view(G * C // b, b, K))
            exp_(factor)
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


def scores(q, k, ld, A, work: Workspace) -> None:
    """A for vector decay, written into ``A`` ``[G, C, C]``. q, k, ld: ``[G, C, K]``, C a power of two."""
    G, C, _ = q.shape
    A.zero_()
    A.diagonal(dim1=-2, dim2=-1).copy_((q * k).sum(-1))  # i = j: no decay
    for s in _levels(C):
        _, queries, keys = work.level(q, k, ld, s)  # [G, M, s, K] each
        _block_view(A, s).copy_(_product(queries, keys.transpose(-1, -2), out=work.blocks_of(G, s, C)))


def scores_backward(dA, q, k, ld, dq, dk, work: Workspace) -> None:
    """Gradients of q and k through :func:`scores`, given dA ``[G, C, C]`` (upper triangle ignored).

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
