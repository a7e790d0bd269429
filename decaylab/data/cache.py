"""On-disk cache of tokenized splits: one directory per (corpus content, tokenizer) holding memory-mappable
``<split>.npy`` arrays and a ``meta.json`` with each array's length, dtype and SHA-256.

Every file is written to a temporary name and renamed into place, and ``meta.json`` is written last, so an
interrupted tokenization leaves no half-written cache that looks complete. On load, each array is checked
against ``meta.json``; a missing, truncated or altered file makes the cache count as absent (with a logged
message), and the caller rebuilds it. Concurrent builders (e.g. DDP ranks) are safe: each rename is atomic and
all of them write identical content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("decaylab.data")
CACHE_FORMAT = 1  # bump when the layout or the tokenization of a corpus changes, so old caches are not reused


def cache_root(cache_dir: str | None) -> Path:
    """``data.cache_dir``, else $DECAYLAB_CACHE, else ~/.cache/decaylab."""
    root = cache_dir or os.environ.get("DECAYLAB_CACHE") or "~/.cache/decaylab"
    return Path(root).expanduser()


def cache_key(*parts: str) -> str:
    """A short, stable hash of the strings that identify a cached item."""
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for part in parts:
        h.update(b"\0" + part.encode("utf-8"))
    return h.hexdigest()[:20]


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class TokenCache:
    """The cache directory of one tokenized corpus: ``load()`` the verified splits or ``store()`` new ones."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.meta_path = self.directory / "meta.json"

    def exists(self) -> bool:
        return self.meta_path.exists()

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """(split name -> read-only memmap, extra metadata), or None when absent or corrupt (then rebuild)."""
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_text())
            arrays = {name: self._load_split(name, info) for name, info in meta["splits"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("token cache %s is corrupt (%s); rebuilding it", self.directory, e)
            return None
        return arrays, meta.get("extra", {})

    def _load_split(self, name: str, info: dict[str, Any]) -> np.ndarray:
        path = self.directory / f"{name}.npy"
        if not path.exists():
            raise ValueError(f"{path.name} is missing")
        if path.stat().st_size != info["file_bytes"]:
            raise ValueError(f"{path.name} has {path.stat().st_size} bytes, expected {info['file_bytes']}")
        if file_sha256(path) != info["sha256"]:
            raise ValueError(f"{path.name} does not match its checksum")
        array = np.load(path, mmap_mode="r")
        if array.shape != (info["length"],) or str(array.dtype) != info["dtype"]:
            raise ValueError(f"{path.name} holds {array.shape} {array.dtype}, expected ({info['length']},)")
        return array

    def store(self, arrays: dict[str, np.ndarray], extra: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Write the splits (atomically, metadata last) and return them memory-mapped from disk."""
        self.directory.mkdir(parents=True, exist_ok=True)
        splits = {}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            path = self.directory / f"{name}.npy"
            atomic_write(path, lambda f, a=array: np.save(f, a, allow_pickle=False))
            splits[name] = {
                "length": int(array.shape[0]),
                "dtype": str(array.dtype),
                "file_bytes": path.stat().st_size,
                "sha256": file_sha256(path),
            }
        meta = {"format": CACHE_FORMAT, "splits": splits, "extra": extra or {}}
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2) + "\n")
        return {name: np.load(self.directory / f"{name}.npy", mmap_mode="r") for name in arrays}
