"""Ops under ``torch.func.vmap`` over replicas of a model: R runs' models in one call, one set of kernels for all.

Runs that differ only in their seed share every shape. Their parameters stacked along a new leading dim and the
model called through ``vmap`` over that dim (``decaylab.training.replicas``) make one step of all R runs: each
matmul a batched matmul, each element-wise kernel R times larger but launched once. torch's own ops batch
themselves under ``vmap``; custom autograd Functions (the Triton kernels, the torch chunked backend) do not.

Most of those ops treat the rows of their leading (batch) dim independently and hold no parameters: for them the
R replicas' rows are simply R times as many rows. ``fold_rows`` folds the replica dim into the batch dim, calls the
op once on plain tensors and splits its outputs back; the op's own autograd Function records the folded call, so
its backward runs once for all replicas too. Ops with a parameter per replica (the norms' weights) take it as a
stacked argument of their own (``decaylab.ops.norm``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._C._functorch import is_batchedtensor


def under_vmap(*tensors: Any) -> bool:
    """Whether any of these is a tensor batched by an enclosing ``vmap`` (what an op sees of a replicated call)."""
    return any(isinstance(t, torch.Tensor) and is_batchedtensor(t) for t in tensors)


class _FoldRows(torch.autograd.Function):
    """Only its ``vmap`` rule ever runs (``fold_rows`` calls it under ``vmap`` alone)."""

    @staticmethod
    def forward(op, rowwise, *args):
        raise RuntimeError("_FoldRows runs only under torch.func.vmap; call the op itself elsewhere")

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass  # required for functorch transforms; the vmap rule records the op's own autograd instead

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("_FoldRows has no backward of its own: the folded op's autograd Function runs instead")

    @staticmethod
    def vmap(info, in_dims, op, rowwise, *args):
        R = info.batch_size
        folded = []
        for arg, dim, rows in zip(args, in_dims[2:], rowwise):
            if isinstance(arg, torch.Tensor) and rows:
                arg = arg.movedim(dim, 0) if dim is not None else arg.expand(R, *arg.shape)
                arg = arg.reshape(R * arg.shape[1], *arg.shape[2:])
            elif dim is not None:
                raise ValueError("an argument without a batch dim differs between replicas; it cannot be shared by "
                                 "their rows (give each replica's rows their own copy)")
            folded.append(arg)
        out = op(*folded)
        many = isinstance(out, tuple)
        outs = tuple(None if o is None else o.view(R, o.shape[0] // R, *o.shape[1:]) for o in (out if many else (out,)))
        dims = tuple(None if o is None else 0 for o in outs)
        return (outs, dims) if many else (outs[0], dims[0])


def fold_rows(op: Callable[..., Any], args: Sequence[Any], rowwise: Sequence[bool]) -> Any:
    """``op(*args)`` for an op whose outputs' rows (leading dim) depend only on the same rows of the ``rowwise`` args.

    Outside ``vmap`` the plain call. Under ``vmap`` (any arg batched) one call of ``op`` on the replicas' rows
    folded into the leading dim: a rowwise arg that is not batched is repeated for every replica; an arg that is
    not rowwise (a table of positions, a flag) must not be batched. ``op`` returns a tensor or a tuple of tensors
    and Nones, each with the rows in its leading dim.
    """
    if len(args) != len(rowwise):
        raise ValueError(f"fold_rows: {len(args)} args but {len(rowwise)} rowwise flags")
    if not under_vmap(*args):
        return op(*args)
    return _FoldRows.apply(op, tuple(rowwise), *args)


__all__ = ["fold_rows", "under_vmap"]
