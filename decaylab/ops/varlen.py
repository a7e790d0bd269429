"""Packed variable-length sequences (``cu_seqlens``) for every backend.

N sequences of lengths T_1..T_N are packed along the time axis of a batch of one, ``[1, sum T_n, H, D]``, with
``cu_seqlens = [0, T_1, T_1 + T_2, ..., sum T_n]`` (the FlashAttention convention; empty sequences allowed). Each
sequence is independent: its state starts from ``initial_state[n]`` (or zeros) and its final state is
``final_state[n]``, both ``[N, H, K, V]``. A backend whose function takes a ``cu_seqlens`` argument (triton) gets
it directly; any other runs once per sequence on slices, and the outputs are concatenated, which gives the same
result and gradients as separate calls.
"""

from __future__ import annotations

import inspect

import torch


# The last offsets read to the host: (the tensor itself, its version counter, T, the offsets). Every layer of a
# packed batch passes the same cu_seqlens, and reading a GPU tensor waits for the whole GPU queue; with this memo a
# training step reads it once instead of once per layer (and again in the triton backend). Holding the tensor
# keeps its memory from being reused by another; an in-place write bumps its version and forces a new read.
_RECENT_OFFSETS: list[tuple[torch.Tensor, int, int, tuple[int, ...]]] = []
_RECENT_LIMIT = 4


def check_cu_seqlens(cu_seqlens, q: torch.Tensor) -> list[int]:
    """The offsets as a list, after checking them against the packed q ``[1, T, H, K]``; ValueError otherwise.
    The read and the checks are remembered for the few most recent offset tensors (unless written in place)."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        got = f"shape {tuple(cu_seqlens.shape)}" if isinstance(cu_seqlens, torch.Tensor) else type(cu_seqlens).__name__
        raise ValueError(
            "cu_seqlens must be a 1-D integer tensor [N+1] of sequence offsets, "
            f"e.g. torch.tensor([0, 5, 12]) for lengths 5 and 7; got {got}"
        )
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be int32 or int64; got {cu_seqlens.dtype} (use .long())")
    if q.shape[0] != 1:
        raise ValueError(
            f"with cu_seqlens, pack the sequences along time in a batch of one: q must be [1, sum T, H, K]; "
            f"got batch {q.shape[0]} (q.reshape(1, -1, H, K) for equal lengths)"
        )
    T = q.shape[1]
    for tensor, version, checked_T, bounds in _RECENT_OFFSETS:
        if tensor is cu_seqlens and version == cu_seqlens._version and checked_T == T:
            return list(bounds)
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != T or any(b > e for b, e in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"cu_seqlens must start at 0, never decrease and end at T = {T}; got {bounds}")
    _RECENT_OFFSETS.append((cu_seqlens, cu_seqlens._version, T, tuple(bounds)))
    del _RECENT_OFFSETS[:-_RECENT_LIMIT]
    return bounds


def takes_cu_seqlens(fn) -> bool:
    return "cu_seqlens" in inspect.signature(fn).parameters


def per_sequence(pick, bounds, q, k, v, log_decay, *, scale, initial_state, output_final_state):
    """Run ``pick(T_n)`` (a backend function) on each packed sequence; concatenate outputs and final states."""
    outputs, finals = [], []
    for n, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        part = slice(start, end)
        o, final = pick(end - start)(
            q[:, part], k[:, part], v[:, part], log_decay[:, part], scale=scale,
            initial_state=None if initial_state is None else initial_state[n : n + 1],
            output_final_state=output_final_state,
        )
        outputs.append(o)
        finals.append(final)
    return torch.cat(outputs, dim=1), (torch.cat(finals) if output_final_state else None)
