"""Exact segment sums of log decays inside a chunk, and a fast, bounded exponential.

Every exponent the chunked path uses is a sum of the log decays of one segment of a chunk, computed as a product
with a constant 0/1 (or -1/0/1) matrix, ``W^T ld``. That adds exactly the decays inside the segment and nothing
else: no sum is a difference of two long prefix sums (no cancellation after a -1e3 step), and the sums that are
meant to be <= 0 are. Log decays are ``[G, C, D]`` here (G chunks of C tokens, D = 1 for scalar decay or K).

``exp_`` raises exponents below EXP_FLOOR to it before the exponential: the vectorised CPU exponential is 20-100x
slower on arguments whose result underflows (below about -87 in float32, -708 in float64), which strong decays
(log decay -1e3, or the -inf of a mask) produce by the million. exp(EXP_FLOOR) is the smallest normal number of
the dtype, about 1e-38 (float32) or 1e-304 (float64), where the true value is even smaller: a difference far
below the rounding of anything it multiplies. Masks are therefore applied after the exponential, by select.
"""

from __future__ import annotations

import functools

import torch

EXP_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}


def exp_(x: torch.Tensor) -> torch.Tensor:
    """In-place exp(max(x, EXP_FLOOR)); see the module docstring for why the floor."""
    return x.clamp_(min=EXP_FLOOR.get(x.dtype, -87.0)).exp_()


@functools.lru_cache(maxsize=64)
def segment_matrix(kind: str, C: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Constant matrices W: (x @ W)[col] = sum of x over the segment that column stands for.

    ``chunk``  [C, 2C]: columns i < C sum t <= i (from the chunk start), columns C + j sum t > j (to its end).
    ``into``   [C, C]: the first half of ``chunk``; ``out_of`` [C, C]: its second half.
    ``halves`` [C, C] with C = 2s: column j < s sums j < t < s (key j to the boundary), column s + i sums
               s <= t <= s + i (the boundary to query i).
    ``halves:b`` [b, b]: ``halves`` for 2s = C repeated along the diagonal b / C times (b a multiple of C).
    ``suffix`` [C, C]: column j sums t >= j (to the chunk end, inclusive).
    ``pairs``  [C, C*C]: column i*C + j sums j < t <= i (empty, i.e. 0, when j >= i).
    ``reference`` [C, C]: column i is G_i - G_r, the running sum at token i minus that at the reference token
               r = C // 2: +sum over r < t <= i after it, -sum over i < t <= r before it (entries -1, 0, 1).
    """
    t = torch.arange(C, device=device)
    if kind.startswith("halves:"):
        repeat = int(kind.split(":")[1]) // C
        return torch.block_diag(*[segment_matrix("halves", C, dtype, device)] * repeat)
    if kind == "suffix":
        return (t[:, None] >= t[None, :]).to(dtype)  # column j sums t >= j
    if kind == "into":
        W = t[:, None] <= t[None, :]
    elif kind == "out_of":
        W = t[:, None] > t[None, :]
    elif kind == "chunk":
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
    elif kind == "reference":
        r = reference_token(C)
        after = (t[:, None] > r) & (t[:, None] <= t[None, :])  # rows t, columns i > r: r < t <= i
        before = (t[:, None] <= r) & (t[:, None] > t[None, :])  # columns i < r: i < t <= r
        return after.to(dtype) - before.to(dtype)
    else:
        raise ValueError(f"unknown segment matrix {kind!r}")
    return W.to(dtype)


def reference_token(C: int) -> int:
    """The token the factored vector path measures decays from: the middle of the chunk."""
    return C // 2


def segment_sums(ld: torch.Tensor, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``W^T ld`` over the token axis: ld ``[G, C, D]`` -> ``[G, W.shape[1], D]``, one matrix product."""
    G, C, D = ld.shape
    if D == 1:  # a row per sequence: one plain matrix product
        rows = torch.matmul(ld.view(G, C), W, out=None if out is None else out.view(G, -1))
        return rows.view(G, -1, 1)
    return torch.matmul(W.transpose(0, 1), ld, out=out)


def chunk_decays(ld: torch.Tensor, out: torch.Tensor, which: str = "chunk") -> torch.Tensor:
    """Decay factors inside each chunk, from ld ``[G, C, D]`` into the contiguous buffer ``out``.

    which = ``into``: exp(sum_{t<=i} ld_t) ``[G, C, D]`` (chunk start to token i); ``out_of``: exp(sum_{t>j} ld_t)
    (token j to the chunk end); ``chunk``: both, ``[G, 2C, D]`` (split it with ``[:, :C]`` and ``[:, C:]``).
    """
    G, C, D = ld.shape
    W = segment_matrix(which, C, ld.dtype, ld.device)
    return exp_(segment_sums(ld, W, out=out.view(-1)[: G * W.shape[1] * D].view(G, W.shape[1], D)))
