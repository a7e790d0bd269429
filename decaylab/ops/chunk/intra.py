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


def segment_sums(ld: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``W^T ld`` over the token axis: ld ``[G, C, D]`` -> ``[G, W.shape[1], D]``, one matrix product."""
    G, C, D = ld.shape
    if D == 1:  # a row per sequence: one plain matrix product
        return (ld.view(G, C) @ W).unsqueeze(-1)
    return torch.matmul(W.transpose(0, 1), ld)


def chunk_decays(ld: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decays relative to the chunk boundaries, from log decays ``[Z, N, C, D]``.

    Returns exp(sum_{t<=i} ld_t) and exp(sum_{t>j} ld_t) as ``[Z, N, C, D]`` and exp(sum_t ld_t) ``[Z, N, D]``.
    """
    Z, N, C, D = ld.shape
    W = _segment_matrix("chunk", C, ld.dtype, ld.device)
    E = segment_sums(ld.view(Z * N, C, D), W).exp_().view(Z, N, 2 * C, D)
    return E[:, :, :C], E[:, :, C:], ld.sum(2).exp()


def scalar_scores(q: torch.Tensor, k: torch.Tensor, ld: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A for scalar decay. q, k ``[Z, N, C, K]``; ld ``[Z, N, C, 1]``. Returns (A, decay matrix), ``[Z, N, C, C]``."""
    Z, N, C, _ = ld.shape
    seg = (ld.reshape(Z * N, C) @ _segment_matrix("pairs", C, ld.dtype, ld.device)).view(Z, N, C, C)
    upper = torch.ones(C, C, dtype=torch.bool, device=ld.device).triu(1)
    decay = seg.masked_fill_(upper, float("-inf")).exp_()  # j > i: exp(-inf) = 0
    return (q @ k.transpose(-1, -2)).mul_(decay), decay


def scalar_scores_backward(
    dA: torch.Tensor, q: torch.Tensor, k: torch.Tensor, decay: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of q and k through A = (q k^T) * L, given dA ``[..., C, C]``."""
    dP = dA.mul_(decay)  # [..., C, C]; L is zero above the diagonal, so this also applies the causal mask
    return dP @ k, dP.transpose(-1, -2) @ q


# Chunks handled together by the vector-decay levels. Each level's temporaries then fit in the CPU cache, and
# they live in buffers allocated once per call: fresh half-megabyte tensors are page-faulted in by the OS on
# every use, which made the levels several times slower than their arithmetic.
TILE_CHUNKS = 32
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


class _Workspace:
    """Per-call buffers for one tile, reused by every level and tile (views of the first G chunks)."""

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


def _tiles(x: torch.Tensor):
    """``[Z, N, C, X]`` -> views ``[G, C, X]`` of at most TILE_CHUNKS chunks each."""
    return x.reshape(-1, *x.shape[-2:]).split(TILE_CHUNKS)


def vector_scores(q: torch.Tensor, k: torch.Tensor, ld: torch.Tensor) -> torch.Tensor:
    """A for vector decay. q, k, ld ``[Z, N, C, K]``, C a power of two. Returns ``[Z, N, C, C]``."""
    Z, N, C, K = q.shape
    A = q.new_zeros(Z, N, C, C)
    work = _Workspace(q, min(TILE_CHUNKS, Z * N), backward=False)
    for q_t, k_t, ld_t, A_t in zip(_tiles(q), _tiles(k), _tiles(ld), _tiles(A)):
        G = q_t.shape[0]
        A_t.diagonal(dim1=-2, dim2=-1).copy_((q_t * k_t).sum(-1))  # i = j: no decay
        for s in _levels(C):
            _, queries, keys = work.level(q_t, k_t, ld_t, s)  # [G, M, s, K] each
            scores = _product(queries, keys.transpose(-1, -2), out=work.blocks_of(G, s, C))
            _block_view(A_t, s).copy_(scores)
    return A


def vector_scores_backward(
    dA: torch.Tensor, q: torch.Tensor, k: torch.Tensor, ld: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of q and k through :func:`vector_scores`, given dA ``[Z, N, C, C]`` (upper triangle ignored).

    The same halving: per level, d(scaled q) = dA_block (scaled k) and d(scaled k) = dA_block^T (scaled q),
    each multiplied by its bounded factor again. The log-decay gradient is not formed here: it follows from
    dq and dk (see :mod:`decaylab.ops.chunk.function`).
    """
    Z, N, C, K = q.shape
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    work = _Workspace(q, min(TILE_CHUNKS, Z * N), backward=True)
    for dA_t, q_t, k_t, ld_t, dq_t, dk_t in zip(*map(_tiles, (dA, q, k, ld, dq, dk))):
        G = q_t.shape[0]
        diag = dA_t.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # [G, C, 1]
        torch.mul(diag, k_t, out=dq_t)
        torch.mul(diag, q_t, out=dk_t)
        for s in _levels(C):
            factors, queries, keys = work.level(q_t, k_t, ld_t, s)
            d_scores = work.blocks_of(G, s, C)
            d_scores.copy_(_block_view(dA_t, s))  # [G, M, s, s], contiguous for the matrix products
            d_scaled = work.d_scaled[:G].view(G, C // (2 * s), s, K)
            _product(d_scores, keys, out=d_scaled)
            _halves(dq_t, s)[:, :, 1].addcmul_(d_scaled, factors[:, :, 1])
            _product(d_scores.transpose(-1, -2), queries, out=d_scaled)
            if s == 1:
                _halves(dk_t, s)[:, :, 0] += d_scaled
            else:
                _halves(dk_t, s)[:, :, 0].addcmul_(d_scaled, factors[:, :, 0])
    return dq, dk
