"""On-disk cache of tokenized splits: one directory per (corpus, tokenizer) holding memory-mappable
``<split>.npy`` arrays and a ``meta.json`` with each array's length, dtype, file size and checksums.

Arrays are written while the corpus streams by: each ``.npy`` starts with a header reserved for any length,
ids are appended to it under a temporary name, and the header is rewritten with the final length at the end.
Checksums are computed from the bytes as they are written: SHA-256 of the whole data and a CRC-32 of every
``block_bytes`` block. Files are renamed into place only when every split is complete, and ``meta.json`` is
written last, so an interrupted tokenization leaves no cache that looks complete; concurrent builders (e.g.
DDP ranks) each rename identical content.

Loading costs O(1) in the data size: file size (catches truncation), header shape and dtype, and the CRC of
the first, the last and ``SAMPLED_BLOCKS`` random blocks. ``load(full=True)`` or ``DECAYLAB_VERIFY_CACHE=1``
re-hashes everything. A cache that fails a check counts as absent (with a logged message) and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.files import as_if_opened, atomic_write_text

log = logging.getLogger("decaylab.data")
CACHE_FORMAT = 2  # bump when the layout or the tokenization of a corpus changes, so old caches are not reused
BLOCK_BYTES = 1 << 20
SAMPLED_BLOCKS = 2
VERIFY_ENV = "DECAYLAB_VERIFY_CACHE"
_RESERVED_LENGTH = 10**19  # the header is first written for this length, so the final one fits in its place


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


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)}
    with tempfile.TemporaryFile() as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.seek(0)
        return f.read()


class TokenFile:
    """Appends token ids to a new ``.npy`` file (under a temporary name) and checksums them on the way."""

    def __init__(self, path: Path, dtype: np.dtype, block_bytes: int = BLOCK_BYTES):
        self.path, self.dtype, self.block_bytes = path, np.dtype(dtype), block_bytes
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")
        self.header_bytes = len(_npy_header(self.dtype, _RESERVED_LENGTH))
        self.file.write(_npy_header(self.dtype, _RESERVED_LENGTH))
        self.length = 0
        self.sha256 = hashlib.sha256()
        self.block_crcs: list[int] = []
        self._crc, self._filled = 0, 0  # CRC and size of the block being filled

    def append(self, ids: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(ids, dtype=self.dtype)).cast("B")
        self.file.write(data)
        self.sha256.update(data)
        self.length += len(data) // self.dtype.itemsize
        while len(data):
            take = min(len(data), self.block_bytes - self._filled)
            self._crc = zlib.crc32(data[:take], self._crc)
            self._filled += take
            data = data[take:]
            if self._filled == self.block_bytes:
                self.block_crcs.append(self._crc)
                self._crc, self._filled = 0, 0

    def finish(self) -> dict[str, Any]:
        """Write the final header and close; returns this split's ``meta.json`` entry (file not renamed yet)."""
        if self._filled:
            self.block_crcs.append(self._crc)
        header = _npy_header(self.dtype, self.length)
        if len(header) != self.header_bytes:
            raise AssertionError(f"npy header changed size ({len(header)} != {self.header_bytes})")
        self.file.seek(0)
        self.file.write(header)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {
            "length": self.length,
            "dtype": str(self.dtype),
            "file_bytes": self.header_bytes + self.length * self.dtype.itemsize,
            "sha256": self.sha256.hexdigest(),
            "block_bytes": self.block_bytes,
            "block_crc32": [f"{c:08x}" for c in self.block_crcs],
        }

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


class CacheWriter:
    """Context manager for writing one cache entry: ``split(name, dtype)`` gives a ``TokenFile``; ``commit``."""

    def __init__(self, cache: "TokenCache", block_bytes: int = BLOCK_BYTES):
        self.cache, self.block_bytes = cache, block_bytes
        self.files: dict[str, TokenFile] = {}
        self.created = False  # whether entering created the cache directory

    def __enter__(self) -> "CacheWriter":
        self.created = not self.cache.directory.exists()
        self.cache.directory.mkdir(parents=True, exist_ok=True)
        return self

    def split(self, name: str, dtype: np.dtype) -> TokenFile:
        if name not in self.files:
            self.files[name] = TokenFile(self.cache.directory / f"{name}.npy", dtype, self.block_bytes)
        return self.files[name]

    def commit(self, extra: dict[str, Any]) -> dict[str, np.ndarray]:
        """Finish every split, rename them into place, then write ``meta.json``; returns the memory maps."""
        splits = {name: f.finish() for name, f in self.files.items()}
        for name, f in self.files.items():
            as_if_opened(f.tmp)
            os.replace(f.tmp, f.path)
        meta = {"format": CACHE_FORMAT, "splits": splits, "extra": extra}
        atomic_write_text(self.cache.meta_path, json.dumps(meta) + "\n")
        return {name: np.load(f.path, mmap_mode="r") for name, f in self.files.items()}

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self.files.values():
            f.discard()  # no-op for committed files (their temporary name is gone)
        if exc_type is not None and self.created:  # a failed build leaves no empty cache directory behind
            try:
                self.cache.directory.rmdir()
            except OSError:  # not empty: another process (a DDP rank) is writing the same entry
                pass


class TokenCache:
    """The cache directory of one tokenized corpus: ``load()`` the verified splits, or ``writer()``/``store()``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.meta_path = self.directory / "meta.json"

    def exists(self) -> bool:
        return self.meta_path.exists()

    def writer(self, block_bytes: int = BLOCK_BYTES) -> CacheWriter:
        return CacheWriter(self, block_bytes)

    def store(self, arrays: dict[str, np.ndarray], extra: dict[str, Any] | None = None,
              block_bytes: int = BLOCK_BYTES) -> dict[str, np.ndarray]:
        """Write in-memory arrays as a cache entry (atomically, metadata last); returns them memory-mapped."""
        with self.writer(block_bytes) as w:
            for name, array in arrays.items():
                w.split(name, np.asarray(array).dtype).append(array)
            return w.commit(extra or {})

    def load(self, full: bool | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """(split name -> read-only memmap, extra metadata), or None when absent or corrupt (then rebuild).

        ``full``: re-hash every byte (default: only if $DECAYLAB_VERIFY_CACHE is 1); otherwise sizes, headers
        and a few sampled blocks are checked.
        """
        if not self.meta_path.exists():
            return None
        full = os.environ.get(VERIFY_ENV, "") == "1" if full is None else full
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {meta.get('format')} is not {CACHE_FORMAT}")
            arrays = {name: self._load_split(name, info, full) for name, info in meta["splits"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("token cache %s is corrupt (%s); rebuilding it", self.directory, e)
            return None
        return arrays, meta.get("extra", {})

    def _load_split(self, name: str, info: dict[str, Any], full: bool) -> np.ndarray:
        path = self.directory / f"{name}.npy"
        if not path.exists():
            raise ValueError(f"{path.name} is missing")
        if path.stat().st_size != info["file_bytes"]:
            raise ValueError(f"{path.name} has {path.stat().st_size} bytes, expected {info['file_bytes']}")
        array = np.load(path, mmap_mode="r")
        if array.shape != (info["length"],) or str(array.dtype) != info["dtype"]:
            raise ValueError(f"{path.name} holds {array.shape} {array.dtype}, expected ({info['length']},)")
        data = array.reshape(-1).view(np.uint8)
        crcs, block = info["block_crc32"], info["block_bytes"]
        if len(crcs) != -(-data.size // block):
            raise ValueError(f"meta.json lists {len(crcs)} blocks for {path.name}, expected {-(-data.size // block)}")
        if full:
            if hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise ValueError(f"{path.name} does not match its checksum")
            checked = set(range(len(crcs)))
        elif crcs:  # first and last block, plus a few random ones (another few at every load)
            checked = {0, len(crcs) - 1, *random.sample(range(len(crcs)), min(SAMPLED_BLOCKS, len(crcs)))}
        else:
            checked = set()
        for i in sorted(checked):
            if f"{zlib.crc32(data[i * block : (i + 1) * block]):08x}" != crcs[i]:
                raise ValueError(f"{path.name} does not match its checksum (block {i})")
        return array
