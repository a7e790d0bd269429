"""Valid/test splits carved out of a training stream as it goes by, without knowing where the stream ends.

A stream is a sequence of pieces ``(text, doc_end)``; ``doc_end`` marks the last piece of a document. A
hold-out rule turns it into ``(split, text, doc_end)``, in stream order:

- ``HeadBytes`` (local text, whose size the file system tells up front): the first ``test_bytes`` UTF-8 bytes
  of the training text are the test split, the next ``valid_bytes`` the valid split, the rest train. Each
  boundary moves forward to the next exact cut (``decaylab.data.pieces``), so it falls on a line boundary and
  tokenization is unchanged; a document cut in two ends, in the first split, with a document end.
- ``EveryNth`` (datasets of rows, whose number may be unknown when streaming): document ``i`` (0-based) is a
  test document when ``floor((i + 1) * f_test) > floor(i * f_test)``, i.e. one in every ``1 / f_test``, evenly
  spaced; of the others (counted by ``j``), valid takes those with ``floor((j + 1) * g) > floor(j * g)``,
  ``g = f_valid / (1 - f_test)``. (Each product gets 1e-9 added before the floor, so that 27 * (0.1 / 0.9)
  counts as 3.) The rule depends on the order only, so it works with any cap on the stream.

``cap_documents`` then ends the stream after ``max_documents`` training documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

from decaylab.data.pieces import find_exact_cut

Piece = tuple[str, bool]  # (text, last piece of its document)
Routed = tuple[str, str, bool]  # (split, text, last piece of its document within that split)


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(frozen=True)
class HeadBytes:
    test_bytes: int
    valid_bytes: int

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s, n in (("test", self.test_bytes), ("valid", self.valid_bytes)) if n > 0)

    def route(self, pieces: Iterator[Piece]) -> Iterator[Routed]:
        stages = [(s, n) for s, n in (("test", self.test_bytes), ("valid", self.valid_bytes)) if n > 0]
        stage, used = 0, 0
        for text, doc_end in pieces:
            while stage < len(stages):
                split, budget = stages[stage]
                size = utf8_len(text)
                if used + size < budget:
                    yield split, text, doc_end
                    used += size
                    break
                # the budget is reached inside this piece: cut at the first exact cut after that point
                cut = len(text.encode("utf-8")[: budget - used].decode("utf-8", "ignore"))
                p = find_exact_cut(text, max(cut, 1))
                p = len(text) if p < 0 else p
                yield split, text[:p], True
                stage, used, text = stage + 1, 0, text[p:]
                if not text:
                    break
            else:
                yield "train", text, doc_end


@dataclass(frozen=True)
class EveryNth:
    test_fraction: float
    valid_fraction: float

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s, f in (("test", self.test_fraction), ("valid", self.valid_fraction)) if f > 0)

    def route(self, pieces: Iterator[Piece]) -> Iterator[Routed]:
        f_test = self.test_fraction
        g_valid = self.valid_fraction / (1.0 - f_test)
        doc, others, split = 0, 0, None
        for text, doc_end in pieces:
            if split is None:  # the first piece of document `doc` decides where the document goes
                if _steps(doc, f_test):
                    split = "test"
                else:
                    split = "valid" if _steps(others, g_valid) else "train"
                    others += 1
            yield split, text, doc_end
            if doc_end:
                doc, split = doc + 1, None


def _steps(i: int, fraction: float) -> bool:
    """Whether ``floor(n * fraction)`` goes up between ``n = i`` and ``n = i + 1``."""
    return math.floor((i + 1) * fraction + 1e-9) > math.floor(i * fraction + 1e-9)


def cap_documents(routed: Iterator[Routed], max_documents: int | None) -> Iterator[Routed]:
    """Stop the stream once the train split has ``max_documents`` documents."""
    if max_documents is None:
        yield from routed
        return
    count = 0
    for split, text, doc_end in routed:
        yield split, text, doc_end
        if split == "train" and doc_end:
            count += 1
            if count >= max_documents:
                return
