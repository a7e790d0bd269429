"""The token cache: reused when valid, rebuilt (with a message) when corrupt, written atomically."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest

from decaylab.data import BPETokenizer, DataConfig, build_dataset, cache_root
from decaylab.data import cache as cache_module
from decaylab.data.cache import TokenCache
from decaylab.files import atomic_write
from decaylab.files import UMASK


def text_cfg(text_dir, cache_dir) -> DataConfig:
    return DataConfig(corpus="text", paths=(str(text_dir),), vocab_size=290, cache_dir=str(cache_dir))


def cache_dirs(cache_dir):
    return sorted(p for p in cache_dir.iterdir() if p.name.startswith("text-"))


def test_cache_is_reused(text_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    first = build_dataset(text_cfg(text_dir, cache_dir))
    [entry] = cache_dirs(cache_dir)
    assert {p.name for p in entry.iterdir()} == {"train.npy", "valid.npy", "test.npy", "meta.json"}
    assert len(list((cache_dir / "tokenizers").glob("bpe-*.json"))) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the cached tokens should have been reused")

    monkeypatch.setattr(BPETokenizer, "encode_batch", no_tokenizing)
    monkeypatch.setattr(BPETokenizer, "train", no_tokenizing)
    second = build_dataset(text_cfg(text_dir, cache_dir))
    for split in ("train", "valid", "test"):
        assert np.array_equal(first.split(split), second.split(split))
        assert isinstance(second.split(split), np.memmap)
    assert second.bytes_in_split("valid") == first.bytes_in_split("valid")


def test_changed_text_gets_a_new_cache_entry(text_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    build_dataset(text_cfg(text_dir, cache_dir))
    (text_dir / "b.txt").write_text("completely different text\n" * 50)
    build_dataset(text_cfg(text_dir, cache_dir))
    assert len(cache_dirs(cache_dir)) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "meta"])
def test_corrupt_cache_is_rebuilt_with_a_message(text_dir, tmp_path, caplog, damage):
    cache_dir = tmp_path / "cache"
    good = np.array(build_dataset(text_cfg(text_dir, cache_dir)).split("train"))
    [entry] = cache_dirs(cache_dir)
    target = entry / "train.npy"
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        target.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "delete":
        target.unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="decaylab.data"):
        rebuilt = build_dataset(text_cfg(text_dir, cache_dir))
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert np.array_equal(rebuilt.split("train"), good)
    assert TokenCache(entry).load() is not None  # the rebuilt cache verifies again


def test_interrupted_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "train.npy"

    def crash(f):
        np.save(f, np.arange(1000))
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of tokenizing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []
    # and an interrupted store() (arrays written, meta.json not yet) is not mistaken for a cache
    cache = TokenCache(tmp_path / "entry")
    cache.store({"train": np.arange(10, dtype=np.uint16)})
    (tmp_path / "entry" / "meta.json").unlink()
    assert cache.load() is None


def test_store_records_lengths_and_checksums(tmp_path):
    cache = TokenCache(tmp_path / "entry")
    arrays = cache.store({"train": np.arange(7, dtype=np.uint16), "valid": np.arange(3, dtype=np.uint16)}, {"k": 1})
    meta = json.loads((tmp_path / "entry" / "meta.json").read_text())
    assert meta["splits"]["train"]["length"] == 7 and meta["splits"]["valid"]["dtype"] == "uint16"
    assert len(meta["splits"]["train"]["sha256"]) == 64 and meta["extra"] == {"k": 1}
    loaded, extra = cache.load()
    assert np.array_equal(loaded["train"], arrays["train"]) and extra == {"k": 1}


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("DECAYLAB_CACHE", str(tmp_path / "env-cache"))
    assert cache_root(None) == tmp_path / "env-cache"
    assert cache_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    monkeypatch.delenv("DECAYLAB_CACHE")
    assert str(cache_root(None)).endswith(".cache/decaylab")


def test_streamed_file_equals_np_save(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 60000, size=n).astype(np.uint16) for n in (0, 1, 777, 5000, 3)]
    cache = TokenCache(tmp_path / "entry")
    with cache.writer(block_bytes=1000) as w:
        for part in parts:
            w.split("train", np.uint16).append(part)
        w.commit({})
    expected = np.concatenate(parts)
    assert np.array_equal(np.load(tmp_path / "entry" / "train.npy"), expected)
    meta = json.loads((tmp_path / "entry" / "meta.json").read_text())["splits"]["train"]
    assert meta["length"] == len(expected) and len(meta["block_crc32"]) == -(-expected.nbytes // 1000)
    assert meta["sha256"] == hashlib.sha256(expected.tobytes()).hexdigest()


def test_interrupted_streaming_write_leaves_nothing(tmp_path):
    cache = TokenCache(tmp_path / "entry")
    with pytest.raises(KeyboardInterrupt):
        with cache.writer() as w:
            w.split("train", np.uint16).append(np.arange(100, dtype=np.uint16))
            raise KeyboardInterrupt
    assert not (tmp_path / "entry").exists() and cache.load() is None  # not even an empty directory


def test_a_failed_corpus_build_leaves_no_cache_directory(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("decay and attention, a line of text\n" * 200)
    (corpus / "b.txt").write_bytes(b"\xff\xfe not utf-8\n" * 10)
    cfg = DataConfig(corpus="text", paths=(str(corpus),), vocab_size=300, cache_dir=str(tmp_path / "cache"),
                     tokenizer_sample_bytes=1000)  # the BPE sample stops before the bad file
    with pytest.raises(ValueError, match="b.txt is not UTF-8 text"):
        build_dataset(cfg)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tokenizers"]


def test_cache_files_get_the_mode_open_would_give(tmp_path):
    cache = TokenCache(tmp_path / "entry")
    cache.store({"train": np.arange(7, dtype=np.uint16)})
    atomic_write(tmp_path / "tokenizer.json", lambda f: f.write(b"{}"))
    files = [tmp_path / "entry" / "train.npy", tmp_path / "entry" / "meta.json", tmp_path / "tokenizer.json"]
    assert {f.stat().st_mode & 0o777 for f in files} == {0o666 & ~UMASK}


@pytest.fixture
def many_blocks(tmp_path):
    """A stored split of 100 blocks of 64 bytes, and the offset of its data in the file."""
    cache = TokenCache(tmp_path / "entry")
    cache.store({"train": np.arange(3200, dtype=np.uint16)}, block_bytes=64)
    path = tmp_path / "entry" / "train.npy"
    return cache, path, path.stat().st_size - 6400


def damage(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_load_reads_only_a_few_blocks(many_blocks, monkeypatch):
    cache, path, start = many_blocks
    checked, crc32 = [], cache_module.zlib.crc32
    monkeypatch.setattr(cache_module.zlib, "crc32", lambda data, value=0: checked.append(len(data)) or crc32(data))
    assert cache.load() is not None
    assert len(checked) <= 2 + cache_module.SAMPLED_BLOCKS and set(checked) == {64}  # 4 blocks of 100


@pytest.mark.parametrize("where", ["first", "last"])
def test_cheap_load_catches_damage_in_the_end_blocks(many_blocks, where, caplog):
    cache, path, start = many_blocks
    damage(path, start + 10 if where == "first" else path.stat().st_size - 10)
    with caplog.at_level(logging.WARNING, logger="decaylab.data"):
        assert cache.load() is None
    assert "does not match its checksum (block" in caplog.text


def test_full_verification_catches_damage_anywhere(many_blocks, monkeypatch):
    cache, path, start = many_blocks
    monkeypatch.setattr(cache_module, "SAMPLED_BLOCKS", 0)  # the cheap check looks at the end blocks only
    damage(path, start + 50 * 64 + 5)  # block 50
    assert cache.load() is not None  # missed by the cheap check (by design) ...
    assert cache.load(full=True) is None  # ... found by the full one
    monkeypatch.setenv("DECAYLAB_VERIFY_CACHE", "1")
    assert cache.load() is None


def test_truncation_is_caught_by_size_alone(many_blocks, monkeypatch):
    cache, path, start = many_blocks
    monkeypatch.setattr(cache_module.zlib, "crc32", lambda *a: pytest.fail("size should have failed first"))
    path.write_bytes(path.read_bytes()[:-2])
    assert cache.load() is None
