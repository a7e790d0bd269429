"""Tokenizers: word level (PTB), byte-level BPE (any text, via `tokenizers`) and integer (MQAR).

All three share one small interface: ``encode(str) -> list[int]``, ``decode(list[int]) -> str``,
``vocab_size``, ``save(path)`` (one JSON file), ``content_hash()`` (identifies the vocabulary for the token
cache), ``encode_batch(list[str]) -> list[np.ndarray]`` (many texts at once, in the cache's dtype),
``end_of_document`` (the id appended after each document, or None) and ``encode_documents(list[str])``
(the in-memory form of what the streaming tokenizer writes: each document's ids, then ``end_of_document``).
``load_tokenizer(path)`` reads any of them back; a plain `tokenizers` tokenizer.json (e.g. GPT-2's) is loaded
as a BPE tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from decaylab.files import atomic_write_text
from decaylab.registry import Registry

TOKENIZERS: Registry[type] = Registry("tokenizer type")
FORMAT_KEY = "decaylab_tokenizer"  # top-level key naming the type in files that decaylab writes itself
END_OF_TEXT = "<|endoftext|>"


def save_json(path: str | Path, data: dict[str, Any]) -> None:
    atomic_write_text(Path(path), json.dumps(data) + "\n")  # a crash never leaves half a tokenizer file


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding every id (halves the cache size for vocabularies <= 65536)."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_documents(tokenizer: Any, documents: Sequence[str]) -> np.ndarray:
    """Concatenated ids of ``documents``, each non-empty one followed by ``tokenizer.end_of_document``."""
    dtype = token_dtype(tokenizer.vocab_size)
    eod = tokenizer.end_of_document
    out: list[np.ndarray] = []
    for doc, ids in zip(documents, tokenizer.encode_batch(list(documents))):
        out.append(ids)
        if doc and eod is not None:
            out.append(np.array([eod], dtype=dtype))
    return np.concatenate(out).astype(dtype, copy=False) if out else np.zeros(0, dtype=dtype)


@TOKENIZERS.register("word")
class WordTokenizer:
    """Whitespace-separated words, one ``<eos>`` per line; out-of-vocabulary words map to ``<unk>``."""

    def __init__(self, vocab: Sequence[str], unk: str = "<unk>", eos: str = "<eos>"):
        if len(set(vocab)) != len(vocab):
            raise ValueError("word vocabulary has duplicate entries; rebuild the tokenizer file")
        for special in (unk, eos):
            if special not in vocab:
                raise ValueError(f"word vocabulary lacks {special!r}; rebuild the tokenizer file")
        self.vocab = list(vocab)
        self.unk, self.eos = unk, eos
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk_id, self.eos_id = self.index[unk], self.index[eos]

    @classmethod
    def from_text(cls, text: str, unk: str = "<unk>", eos: str = "<eos>") -> "WordTokenizer":
        """Vocabulary of a training text, in order of first appearance (stable, so ids never depend on hashing)."""
        vocab = list(dict.fromkeys(text.split()))
        for special in (unk, eos):
            if special not in vocab:
                vocab.append(special)
        return cls(vocab, unk, eos)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        get, unk = self.index.get, self.unk_id
        for line in text.split("\n"):
            words = line.split()
            if words:  # blank lines carry no sentence, hence no <eos> (the PTB convention)
                ids.extend(get(w, unk) for w in words)
                ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        words = [self.vocab[int(i)] for i in ids]
        lines, current = [], []
        for w in words:
            if w == self.eos:
                lines.append(" ".join(current) + "\n")
                current = []
            else:
                current.append(w)
        return "".join(lines) + " ".join(current)

    end_of_document = None  # every non-empty line already ends in <eos>, which also separates documents

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        dtype = token_dtype(self.vocab_size)
        return [np.array(self.encode(t), dtype=dtype) for t in texts]

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        return encode_documents(self, documents)

    def to_json(self) -> dict[str, Any]:
        return {FORMAT_KEY: "word", "unk": self.unk, "eos": self.eos, "vocab": self.vocab}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WordTokenizer":
        return cls(data["vocab"], data["unk"], data["eos"])

    def save(self, path: str | Path) -> None:
        save_json(path, self.to_json())

    def content_hash(self) -> str:
        return _sha256(json.dumps(self.to_json(), sort_keys=True))


@TOKENIZERS.register("bpe")
class BPETokenizer:
    """A `tokenizers` tokenizer (trained byte-level BPE, or any tokenizer.json the user supplies)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.eot_id = tokenizer.token_to_id(END_OF_TEXT)

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int) -> "BPETokenizer":
        """Byte-level BPE: any string round-trips exactly (no unknown tokens, no added prefix space).

        ``documents`` may be any iterable of texts, e.g. a stream of pieces (see ``decaylab.data.pieces``):
        pieces cut at exact cuts give the same pre-token counts, hence the same merges, as whole documents.
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so nothing is ever unknown
            show_progress=False,
        )
        tok.train_from_iterator(documents, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def end_of_document(self) -> int | None:
        return self.eot_id  # <|endoftext|>, when the vocabulary has it

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids of many texts, encoded in parallel by `tokenizers` (without offsets when it can skip them)."""
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        dtype = token_dtype(self.vocab_size)
        return [np.array(enc.ids, dtype=dtype) for enc in encode(list(texts), add_special_tokens=False)]

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        return encode_documents(self, documents)

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.tokenizer.to_str())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json.dumps(data)))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.tokenizer.to_str() + "\n")

    def content_hash(self) -> str:
        return _sha256(self.tokenizer.to_str())


@TOKENIZERS.register("integer")
class IntegerTokenizer:
    """Tokens are their own ids, written as space-separated integers (synthetic tasks such as MQAR)."""

    def __init__(self, vocab_size: int):
        self._vocab_size = int(vocab_size)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        try:
            ids = [int(t) for t in text.split()]
        except ValueError:
            raise ValueError(f"integer tokenizer: expected space-separated integers, got {text[:50]!r}") from None
        bad = [i for i in ids if not 0 <= i < self._vocab_size]
        if bad:
            raise ValueError(f"integer tokenizer: ids {bad[:5]} are outside [0, {self._vocab_size})")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    end_of_document = None

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array(self.encode(t), dtype=token_dtype(self._vocab_size)) for t in texts]

    def encode_documents(self, documents: Sequence[str]) -> np.ndarray:
        return encode_documents(self, documents)

    def to_json(self) -> dict[str, Any]:
        return {FORMAT_KEY: "integer", "vocab_size": self._vocab_size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "IntegerTokenizer":
        return cls(data["vocab_size"])

    def save(self, path: str | Path) -> None:
        save_json(path, self.to_json())

    def content_hash(self) -> str:
        return _sha256(json.dumps(self.to_json(), sort_keys=True))


def tokenizer_from_json(data: Any, source: str = "tokenizer") -> Any:
    """Rebuild a tokenizer from its JSON object (the contents of a saved tokenizer file)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} is not a tokenizer file (expected a JSON object)")
    # Files without our key are `tokenizers` files (their top level has "model"), e.g. a downloaded GPT-2 BPE.
    kind = data.get(FORMAT_KEY, "bpe" if "model" in data else None)
    if kind is None:
        raise ValueError(
            f"{source} is neither a decaylab tokenizer nor a `tokenizers` tokenizer.json (no {FORMAT_KEY!r} or "
            f"'model' key); pass a tokenizer.json saved by `tokenizers` or by decaylab"
        )
    cls = TOKENIZERS.get(kind)
    try:
        return cls.from_json(data)
    except ValueError:
        raise  # already names the problem and the fix
    except Exception as e:  # KeyError for missing fields; `tokenizers` raises a bare Exception on bad files
        raise ValueError(f"{source} is a corrupt {kind} tokenizer file ({e}); re-create or re-download it") from None


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer file written by ``save`` (or any `tokenizers` tokenizer.json)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist; fix data.tokenizer or train one (unset it)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"tokenizer file {path} is not valid JSON ({e}); re-create or re-download it") from None
    return tokenizer_from_json(data, source=f"tokenizer file {path}")
