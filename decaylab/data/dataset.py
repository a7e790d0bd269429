"""Batches from a tokenized corpus: deterministic training windows and exhaustive evaluation windows.

Training (``train_batch``) cuts the train split into ``W = (N - T) // T`` windows of ``T + 1`` tokens
(``x = w[:-1]``, ``y = w[1:]``), offset by a random phase in ``[0, T)`` per epoch, and visits them in a random
order per epoch. Global row ``i`` of step ``s`` is window number ``s * G + i`` of that stream (``G =
batch_size * world_size``), so each epoch sees every window once and the batch is a pure function of
``(step, batch_size, seq_len, seed, rank, world_size)``: resuming at step ``s`` repeats the same batches, and
rank ``r`` gets rows ``r * batch_size : (r + 1) * batch_size`` of the global batch a single process would see.

Evaluation (``eval_batches``) scores targets ``t_1 .. t_{N-1}`` of a split exactly once: window ``j`` has
``x = t[jT : jT + T]`` and ``y = t[jT + 1 : jT + T + 1]``; the last window is padded with ``y = -100``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import torch

IGNORE_INDEX = -100  # targets with this value take no loss (torch.nn.functional.cross_entropy's default)
SPLITS = ("train", "valid", "test")


def check_batch_args(batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1) -> None:
    if seq_len <= 0:
        raise ValueError(f"seq_len={seq_len} must be a positive number of tokens")
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be a positive number of sequences")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need world_size >= 1 and 0 <= rank < world_size")


def check_split_name(name: str, available) -> None:
    if name in available:
        return
    if name in SPLITS:  # a standard split this corpus was configured without
        fix = f"; give the corpus one with data.{name}_paths or data.{name}_fraction > 0"
    else:
        fix = f" (split names are {', '.join(SPLITS)})"
    raise ValueError(f"no split {name!r} in this corpus; available: {', '.join(available)}{fix}")


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    # SeedSequence mixes all entries, so (seed, epoch) pairs never share a stream the way seed + epoch would.
    return np.random.default_rng([int(seed), int(epoch), int(stream)])


@lru_cache(maxsize=4)
def _epoch_plan(seed: int, epoch: int, num_windows: int, seq_len: int) -> tuple[int, np.ndarray]:
    """(phase, window order) of one epoch; cached because consecutive steps share an epoch."""
    rng = epoch_rng(seed, epoch, stream=0)
    phase = int(rng.integers(seq_len))
    return phase, rng.permutation(num_windows)


def window_starts(step: int, rows: int, seq_len: int, num_tokens: int, seed: int) -> np.ndarray:
    """Start offsets of the ``rows`` training windows of global batch ``step`` (see the module docstring)."""
    num_windows = (num_tokens - seq_len) // seq_len
    if num_windows < 1:
        raise ValueError(
            f"seq_len={seq_len} is too long for a train split of {num_tokens} tokens; "
            f"use seq_len <= {max(num_tokens // 2, 0)}"
        )
    index = step * rows + np.arange(rows, dtype=np.int64)  # positions in the endless stream of windows
    starts = np.empty(rows, dtype=np.int64)
    for epoch in np.unique(index // num_windows):
        phase, order = _epoch_plan(seed, int(epoch), num_windows, seq_len)
        mask = index // num_windows == epoch
        starts[mask] = phase + order[index[mask] % num_windows] * seq_len
    return starts


class TokenDataset:
    """A tokenized language-modeling corpus (see the module docstring for how batches are drawn).

    Attributes:
        vocab_size: number of token ids (the model's embedding size).
        tokenizer: encode/decode/save; ``decaylab.data.load_tokenizer`` reads the saved file back.
        word_level: True when tokens are words (PTB), so perplexity per token is word-level perplexity.
        task: "lm" (perplexity / bits per byte).
    """

    task = "lm"

    def __init__(self, splits: dict[str, np.ndarray], tokenizer: Any, *, split_bytes: dict[str, int],
                 word_level: bool, name: str):
        self.splits = splits
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.split_bytes = split_bytes
        self.word_level = word_level
        self.name = name

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self.splits.items())
        return f"TokenDataset({self.name}, vocab_size={self.vocab_size}, tokens: {sizes})"

    def split(self, name: str) -> np.ndarray:
        """The 1-D token ids of a split (read-only, memory-mapped)."""
        check_split_name(name, list(self.splits))
        return self.splits[name]

    def bytes_in_split(self, name: str) -> int:
        """UTF-8 bytes of the split's text (for bits per byte = total loss in nats / ln 2 / bytes)."""
        check_split_name(name, list(self.splits))
        return self.split_bytes[name]

    def split_size(self, name: str) -> tuple[int, int]:
        """(tokens, UTF-8 bytes) of a split, the two counts that convert loss per token into bits per byte."""
        return len(self.split(name)), self.bytes_in_split(name)

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                    world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``rank * batch_size : (rank + 1) * batch_size`` of global batch ``step``.

        Returns:
            (x, y): LongTensors [batch_size, seq_len], ``y`` is ``x`` shifted by one token.
        """
        check_batch_args(batch_size, seq_len, rank, world_size)
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        tokens = self.split("train")
        starts = window_starts(step, batch_size * world_size, seq_len, len(tokens), seed)
        starts = starts[rank * batch_size : (rank + 1) * batch_size]
        rows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)  # [B, T + 1]
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]

    def num_eval_targets(self, split: str) -> int:
        """Targets ``eval_batches`` scores: every token of the split but the first."""
        return max(len(self.split(split)) - 1, 0)

    def eval_batches(self, split: str, seq_len: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Contiguous non-overlapping windows covering the split; (x, y) LongTensors [<=batch_size, seq_len]."""
        check_batch_args(batch_size, seq_len)
        tokens = self.split(split)
        num_targets = self.num_eval_targets(split)
        num_windows = -(-num_targets // seq_len)
        for first in range(0, num_windows, batch_size):
            rows = min(batch_size, num_windows - first)
            x = torch.zeros(rows, seq_len, dtype=torch.long)
            y = torch.full((rows, seq_len), IGNORE_INDEX, dtype=torch.long)
            for r in range(rows):
                start = (first + r) * seq_len
                n = min(seq_len, num_targets - start)
                x[r, :n] = torch.from_numpy(tokens[start : start + n].astype(np.int64))
                y[r, :n] = torch.from_numpy(tokens[start + 1 : start + n + 1].astype(np.int64))
            yield x, y
