"""DecayLabCache: decaylab's decoding state as a transformers ``Cache``.

``layers[i]`` is layer i's own cache, exactly what ``DecayLM`` returns: for linear attention the fp32 recurrent state
``[B, H, K', V]`` and the decay's carried state (LightNet/LSSP normalizer), for the softmax baseline the keys and
values. With TPE's state and the next position (per row for left-padded batches) it is a ``decaylab.model.Cache``,
so a new token costs one single-token forward: O(1) work and memory per token for linear attention.

A recurrent state cannot be rewound, so ``crop`` (assisted decoding) is refused; beam search reorders rows.
"""

from __future__ import annotations

import torch
from transformers import Cache

from decaylab.model.lm import Cache as ModelCache
from decaylab.model.padding import map_rows


class DecayLabCache(Cache):
    is_compileable = False
    is_croppable = False

    def __init__(self, state: ModelCache | None = None, seen_tokens: int = 0):
        super().__init__(layers=[])
        self.state: ModelCache | None = None
        self.seen_tokens = 0
        if state is not None:
            self.advance(state, seen_tokens)

    def advance(self, state: ModelCache, new_tokens: int) -> None:
        """Take the state a forward returned after ``new_tokens`` more columns of input."""
        self.state = state
        self.layers = list(state.layers)
        self.seen_tokens += new_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Input columns seen so far (padding included, as transformers counts them)."""
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1  # no limit: the state has a fixed size

    @property
    def batch_size(self) -> int:
        return -1 if self.state is None else self.layers[0][0].shape[0]

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    def _select(self, fn) -> None:
        if self.state is not None:
            self.state = map_rows(self.state, fn)
            self.layers = list(self.state.layers)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select(lambda t: t[indices.to(t.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._select(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        self.state, self.layers, self.seen_tokens = None, [], 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise ValueError("a decaylab cache holds recurrent states, which cannot be rewound; assisted and "
                             "speculative decoding are not supported (use plain greedy, sampling or beam search)")
