"""Streaming tokenization: a corpus's pieces -> ``encode_batch`` -> ids appended to the cache files.

Pieces are gathered until about ``batch_bytes`` of text, encoded in one ``encode_batch`` call (`tokenizers`
spreads it over every core) and appended, in stream order, to the file of their split, followed by the
tokenizer's end-of-document id after a document's last piece. Memory holds one batch of text and its ids,
never the corpus, and the result does not depend on ``batch_bytes``. ``max_tokens`` ends the stream once the
train split holds exactly that many tokens (the last document is cut); ``max_documents`` once it holds that
many documents.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from decaylab.data.cache import TokenCache
from decaylab.data.corpora import Corpus
from decaylab.data.holdout import Routed, utf8_len
from decaylab.data.tokenizer import token_dtype

log = logging.getLogger("decaylab.data")
PROGRESS_MIN_BYTES = 64 << 20  # no progress bar for corpora smaller than this


def sample_texts(corpus: Corpus, max_bytes: int):
    """The first ``max_bytes`` (rounded up to a piece) of the training split's text."""
    seen = 0
    for text in corpus.train_texts():
        yield text
        seen += utf8_len(text)
        if seen >= max_bytes:
            return


class _SplitCounter:
    """Tokens and UTF-8 bytes written per split."""

    def __init__(self, splits):
        self.tokens = {s: 0 for s in splits}
        self.bytes = {s: 0 for s in splits}


def tokenize_to_cache(corpus: Corpus, tokenizer: Any, cache: TokenCache, *, batch_bytes: int,
                      max_tokens: int | None = None, max_documents: int | None = None,
                      ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tokenize every split of ``corpus`` into ``cache``; returns (split -> memmap, the cache's extra metadata)."""
    from tqdm import tqdm

    start = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)
    counter = _SplitCounter(corpus.splits)
    show = corpus.total_bytes is None or corpus.total_bytes >= PROGRESS_MIN_BYTES
    with cache.writer() as writer, tqdm(total=corpus.total_bytes, unit="B", unit_scale=True, mininterval=1.0,
                                        desc=f"tokenizing {corpus.name}", disable=None if show else True) as bar:
        files = {split: writer.split(split, dtype) for split in corpus.splits}
        batch: list[Routed] = []
        size = 0
        for item in corpus.routed(max_documents):
            batch.append(item)
            size += len(item[1])
            if size >= batch_bytes:
                done = _flush(batch, tokenizer, files, counter, max_tokens, dtype)
                bar.update(sum(utf8_len(text) for _, text, _ in batch))
                batch, size = [], 0
                if done:
                    break
        else:
            _flush(batch, tokenizer, files, counter, max_tokens, dtype)
        _check_sizes(corpus, counter)
        extra = {"corpus": corpus.name, "split_bytes": counter.bytes, "split_tokens": counter.tokens}
        splits = writer.commit(extra)
    seconds = time.perf_counter() - start
    total = sum(counter.tokens.values())
    log.info("tokenized %s: %d tokens in %.1f s (%.0f tokens/s) into %s", corpus.name, total, seconds,
             total / max(seconds, 1e-9), cache.directory)
    return splits, extra


def _flush(batch: list[Routed], tokenizer: Any, files, counter: _SplitCounter, max_tokens: int | None,
           dtype: np.dtype) -> bool:
    """Encode and write one batch in order; True when the train split reached ``max_tokens`` (stop reading)."""
    if not batch:
        return False
    eod = tokenizer.end_of_document
    for (split, text, doc_end), ids in zip(batch, tokenizer.encode_batch([text for _, text, _ in batch])):
        if doc_end and eod is not None:
            ids = np.append(ids, np.asarray(eod, dtype=dtype))
        size = utf8_len(text)
        if split == "train" and max_tokens is not None and counter.tokens["train"] + len(ids) >= max_tokens:
            kept = ids[: max_tokens - counter.tokens["train"]]
            if len(kept) < len(ids):  # the text behind the kept ids (exact for byte-level tokenizers)
                size = utf8_len(tokenizer.decode(kept[kept != eod] if eod is not None else kept))
            files[split].append(kept)
            counter.tokens[split] += len(kept)
            counter.bytes[split] += size
            return True
        files[split].append(ids)
        counter.tokens[split] += len(ids)
        counter.bytes[split] += size
    return False


def _check_sizes(corpus: Corpus, counter: _SplitCounter) -> None:
    held_out = corpus.holdout.splits if corpus.holdout else ()
    for split in corpus.splits:
        n = counter.tokens[split]
        if n >= 2:
            continue
        if split in held_out:
            raise ValueError(
                f"the training text is too small to hold out the {split} split ({n} tokens); add more text, "
                f"raise data.{split}_fraction, or {corpus.holdout_fix}"
            )
        if split == "train" and held_out:
            raise ValueError(
                f"the training text is too small to hold out {' and '.join(held_out)} and keep a train split "
                f"({n} tokens left); add more text, lower the fractions, or {corpus.holdout_fix}"
            )
        raise ValueError(f"the {split} split has {n} tokens; add text to it (at least 2 are needed)")
