"""The intra-chunk decayed scores A and their backward, for scalar and vector decay.

Within one chunk of C tokens (log decays ``ld``, queries ``q``, keys ``k``, all ``[G, C, .]`` for G chunks):

    A[i, j] = sum_c q[i, c] * k[j, c] * exp(seg_c(i, j))   for j <= i,   0 above the diagonal,
    seg_c(i, j) = sum_{t=j+1..i} ld[t, c]                   (<= 0, zero on the diagonal).

Scalar decay (ld ``[G, C, 1]``): seg does not depend on c, so A = (q k^T) * L with the C x C decay matrix
L = exp(seg), one matmul (segment sums from :mod:`decaylab.ops.chunk.segments`; the upper triangle of L is set to
0 by a select after the exponential).

Vector decay (ld ``[G, C, K]``): per chunk, the factored path (:mod:`decaylab.ops.chunk.factored`: one matmul
around the chunk's middle token) when the chunk's decay span allows it, otherwise the exact halving path
(:mod:`decaylab.ops.chunk.halving`: log2(C) levels of small matmuls, any decay). A tile whose chunks differ is
split into the two groups.
"""

from __future__ import annotations

import torch

from decaylab.ops.chunk import factored, halving
from decaylab.ops.chunk.segments import exp_, segment_matrix


def scalar_scores(q, k, ld, A, decay) -> None:
    """A = (q k^T) * L for scalar decay, written into ``A`` and ``decay`` (L), both ``[G, C, C]``.

    q, k: ``[G, C, K]``; ld: ``[G, C, 1]``.
    """
    G, C, _ = ld.shape
    torch.matmul(ld.view(G, C), segment_matrix("pairs", C, ld.dtype, ld.device), out=decay.view(G, C * C))
    exp_(decay).tril_()  # j > i: empty segments, exp(0) = 1; tril_ assigns 0 there
    torch.matmul(q, k.transpose(-1, -2), out=A).mul_(decay)


def scalar_scores_backward(dA, q, k, decay, dq, dk) -> None:
    """Gradients of q and k through A = (q k^T) * L, given dA ``[G, C, C]`` (overwritten), into dq and dk."""
    dP = dA.mul_(decay)  # L is zero above the diagonal, so this also applies the causal mask
    torch.matmul(dP, k, out=dq)
    torch.matmul(dP.transpose(-1, -2), q, out=dk)


def plans_per_chunk(like: torch.Tensor) -> bool:
    """Whether the vector path picks factored or halving chunk by chunk. The pick reads the decays on the host, which
    a CUDA graph capture does not allow: while one is capturing, every chunk takes the halving path, exact for any
    decay. Eager calls keep the pick (on an H200, 1.5-2.4x faster eager than halving everywhere)."""
    return not (like.is_cuda and torch.cuda.is_current_stream_capturing())


class VectorWorkspace:
    """Buffers of both vector paths for one tile of G chunks; the halving ones only once a chunk needs them."""

    def __init__(self, like: torch.Tensor, G: int, backward: bool):
        self.like, self.G, self.backward = like, G, backward
        self.per_chunk = plans_per_chunk(like)
        self.factored = factored.Workspace(like, G) if self.per_chunk else None
        self._halving = None

    @property
    def halving(self) -> halving.Workspace:
        if self._halving is None:
            self._halving = halving.Workspace(self.like, self.G, self.backward)
        return self._halving


def _plan(ld: torch.Tensor, work: VectorWorkspace):
    """(e, plan): the factor exponents, and "factored" or "halving" for the whole tile or else the pair
    (indices of the chunks within the span limit, indices of the others)."""
    if not work.per_chunk:
        return None, "halving"
    e = factored.exponents(ld, work.factored)
    fast = factored.within_limit(e)
    count = int(fast.sum())
    if count in (0, len(fast)):
        return e, "factored" if count else "halving"
    return e, (fast.nonzero().squeeze(1), (~fast).nonzero().squeeze(1))


def vector_scores(q, k, ld, A, work: VectorWorkspace) -> None:
    """A for vector decay, written into ``A`` ``[G, C, C]``. q, k, ld: ``[G, C, K]``, C a power of two."""
    e, plan = _plan(ld, work)
    if plan == "factored":
        return factored.scores(q, k, e, A, work.factored)
    if plan == "halving":
        return halving.scores(q, k, ld, A, work.halving)
    fast, slow = plan
    A_fast = A.new_empty(len(fast), *A.shape[1:])
    factored.scores(q[fast], k[fast], e[fast], A_fast, work.factored)
    A_slow = A.new_empty(len(slow), *A.shape[1:])
    halving.scores(q[slow], k[slow], ld[slow], A_slow, work.halving)
    A.index_copy_(0, fast, A_fast).index_copy_(0, slow, A_slow)


def vector_scores_backward(dA, q, k, ld, dq, dk, work: VectorWorkspace) -> None:
    """Gradients of q and k through :func:`vector_scores` into dq, dk ``[G, C, K]``; dA ``[G, C, C]`` is scratch.

    The log-decay gradient is not formed here: it follows from dq and dk (see :mod:`decaylab.ops.chunk.function`).
    """
    e, plan = _plan(ld, work)
    if plan == "factored":
        return factored.scores_backward(dA, q, k, e, dq, dk, work.factored)
    if plan == "halving":
        return halving.scores_backward(dA, q, k, ld, dq, dk, work.halving)
    for index, path in zip(plan, ("factored", "halving")):
        dq_part, dk_part = dq.new_empty(len(index), *dq.shape[1:]), dk.new_empty(len(index), *dk.shape[1:])
        if path == "factored":
            factored.scores_backward(dA[index], q[index], k[index], e[index], dq_part, dk_part, work.factored)
        else:
            halving.scores_backward(dA[index], q[index], k[index], ld[index], dq_part, dk_part, work.halving)
        dq.index_copy_(0, index, dq_part)
        dk.index_copy_(0, index, dk_part)
