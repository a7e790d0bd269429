"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"), a synthetic recall task.

Each sequence of length T starts with P key-value pairs ``k_1 v_1 ... k_P v_P`` (keys distinct, drawn from
``[1, V/2)``; values distinct, from ``[V/2, V)``). The rest of the sequence has ``(T - 2P) // 2`` query slots
at even offsets; Q distinct keys are placed in slots chosen without replacement with probability
``p(g) ∝ a·g^(a-1)`` for slot ``g = 1, 2, ...`` (a power law: small ``a`` puts queries soon after the pairs,
``a = 1`` is uniform). At a query position the target is the value paired with that key earlier; every other
target is -100. Other positions hold token 0, or random tokens when ``random_filler`` is on.

The score is recall accuracy: the argmax prediction over the positions whose target is not -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from decaylab.data.dataset import IGNORE_INDEX, check_batch_args, check_split_name
from decaylab.data.tokenizer import IntegerTokenizer

EVAL_SPLITS = ("valid", "test")
_STREAM = {"train": 0, "valid": 1, "test": 2}  # separate random streams keep train/valid/test disjoint


@dataclass(frozen=True)
class MQARTask:
    vocab_size: int
    num_kv_pairs: int
    num_queries: int
    power_a: float = 0.01
    random_filler: bool = True

    def check_seq_len(self, seq_len: int) -> None:
        needed = 2 * self.num_kv_pairs + 2 * self.num_queries
        if seq_len < needed:
            raise ValueError(
                f"seq_len={seq_len} is too short for MQAR with {self.num_kv_pairs} pairs and {self.num_queries} "
                f"queries; use seq_len >= {needed} or fewer data.mqar_num_kv_pairs / data.mqar_num_queries"
            )

    def generate(self, rng: np.random.Generator, rows: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) int64 arrays [rows, seq_len] for ``rows`` independent sequences."""
        self.check_seq_len(seq_len)
        P, Q, half = self.num_kv_pairs, self.num_queries, self.vocab_size // 2
        # 1. distinct keys and values per row: the first P entries of a random ordering of each vocabulary half
        keys = 1 + np.argsort(rng.random((rows, half - 1)), axis=1)[:, :P]  # [rows, P] in [1, half)
        values = half + np.argsort(rng.random((rows, self.vocab_size - half)), axis=1)[:, :P]  # [rows, P]
        # 2. which pairs are queried (Q of them) and in which query slots, power-law weighted without replacement:
        #    the Q largest of log p(g) + Gumbel noise are a weighted sample without replacement (Gumbel top-k)
        asked = np.argsort(rng.random((rows, P)), axis=1)[:, :Q]  # [rows, Q] pair indices
        num_slots = (seq_len - 2 * P) // 2
        g = np.arange(1, num_slots + 1, dtype=np.float64)
        log_p = np.log(self.power_a) + (self.power_a - 1.0) * np.log(g)
        gumbel = -np.log(-np.log(rng.random((rows, num_slots)).clip(1e-300, None)))
        slots = np.argsort(-(log_p + gumbel), axis=1)[:, :Q]  # [rows, Q]
        # 3. assemble: pairs first, queries at even offsets after them, targets at the query positions
        if self.random_filler:
            x = rng.integers(0, self.vocab_size, size=(rows, seq_len))
        else:
            x = np.zeros((rows, seq_len), dtype=np.int64)
        x[:, 0 : 2 * P : 2] = keys
        x[:, 1 : 2 * P : 2] = values
        y = np.full((rows, seq_len), IGNORE_INDEX, dtype=np.int64)
        positions = 2 * P + 2 * slots  # [rows, Q]
        np.put_along_axis(x, positions, np.take_along_axis(keys, asked, axis=1), axis=1)
        np.put_along_axis(y, positions, np.take_along_axis(values, asked, axis=1), axis=1)
        return x.astype(np.int64), y


def mqar_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Recall accuracy: fraction of positions with ``y != -100`` whose argmax prediction equals ``y``.

    Args:
        logits: [B, T, vocab] (or [N, vocab]) scores.
        y: [B, T] (or [N]) targets, -100 where nothing is asked.
    """
    if logits.shape[:-1] != y.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match targets {tuple(y.shape)}: need [..., vocab] and [...]"
        )
    mask = y != IGNORE_INDEX
    if not mask.any():
        raise ValueError("no positions to score: every target is -100")
    return (logits.argmax(dim=-1)[mask] == y[mask]).float().mean().item()


class MQARDataset:
    """MQAR with the dataset interface: ``train_batch`` draws fresh sequences, ``eval_batches`` fixed sets.

    Attributes: ``vocab_size``, ``tokenizer`` (integer tokens), ``word_level`` (False), ``task`` ("mqar").
    There are no token arrays, so ``split()``, ``split_size()`` and ``bytes_in_split()`` are not available;
    ``mqar_accuracy(model, split, seq_len)`` scores a model.
    """

    task = "mqar"
    word_level = False
    name = "mqar"

    def __init__(self, task: MQARTask, eval_examples: int):
        self.mqar = task
        self.eval_examples = eval_examples
        self.vocab_size = task.vocab_size
        self.tokenizer = IntegerTokenizer(task.vocab_size)

    def __repr__(self) -> str:
        return f"MQARDataset({self.mqar}, eval_examples={self.eval_examples})"

    def split(self, name: str) -> np.ndarray:
        raise ValueError("MQAR has no token arrays; use train_batch / eval_batches and score with mqar_accuracy")

    def split_size(self, name: str) -> tuple[int, int]:
        return self.bytes_in_split(name)

    def bytes_in_split(self, name: str) -> int:
        raise ValueError("MQAR is scored by recall accuracy (decaylab.data.mqar_accuracy), not bits per byte")

    @torch.no_grad()
    def mqar_accuracy(self, model: torch.nn.Module, split: str = "test", seq_len: int | None = None,
                      batch_size: int = 64) -> float:
        """Recall accuracy of ``model`` (input ids [B, T] -> logits [B, T, vocab]) on a split's fixed set."""
        if seq_len is None:
            raise ValueError("MQAR accuracy needs seq_len=... (the length the run was trained with, train.seq_len)")
        device = next(model.parameters()).device
        correct = total = 0
        for x, y in self.eval_batches(split, seq_len, batch_size):
            logits = model(x.to(device))
            mask = y != IGNORE_INDEX
            correct += (logits.argmax(dim=-1).cpu()[mask] == y[mask]).sum().item()
            total += int(mask.sum())
        return correct / total

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                    world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``rank * batch_size : (rank + 1) * batch_size`` of global batch ``step`` (pure function)."""
        check_batch_args(batch_size, seq_len, rank, world_size)
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        rng = np.random.default_rng([int(seed), int(step), _STREAM["train"]])
        x, y = self.mqar.generate(rng, batch_size * world_size, seq_len)  # the whole global batch, then our rows
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        return torch.from_numpy(x[rows].copy()), torch.from_numpy(y[rows].copy())

    def eval_batches(self, split: str, seq_len: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed ``eval_examples`` sequences of a split (same for every call with the same seq_len)."""
        check_split_name(split, EVAL_SPLITS)
        check_batch_args(batch_size, seq_len)
        rng = np.random.default_rng([0, _STREAM[split], seq_len])
        x, y = self.mqar.generate(rng, self.eval_examples, seq_len)
        for first in range(0, self.eval_examples, batch_size):
            yield torch.from_numpy(x[first : first + batch_size]), torch.from_numpy(y[first : first + batch_size])
