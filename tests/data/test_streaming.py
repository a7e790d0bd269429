"""Streaming tokenization: equal to the in-memory path, bounded memory, caps, hold-out rules, BPE on a sample."""

from __future__ import annotations

import dataclasses
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from decaylab.data import BPETokenizer, DataConfig, build_dataset, corpora
from decaylab.data.cache import TokenFile
from decaylab.data.holdout import EveryNth, HeadBytes, cap_documents

from tests.data.conftest import random_text


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """40 files of about 25 KB (1 MB in all), plus separate valid/test files, and a BPE trained on them."""
    root = tmp_path_factory.mktemp("many")
    rng = random.Random(3)
    for i in range(40):
        (root / "train" / f"{i // 10}").mkdir(parents=True, exist_ok=True)
        (root / "train" / f"{i // 10}" / f"doc{i:02d}.txt").write_text(random_text(rng, 400))
    (root / "valid.txt").write_text(random_text(rng, 200))
    (root / "test.txt").write_text(random_text(rng, 200))
    tokenizer = BPETokenizer.train([random_text(rng, 2000)], 320)
    tokenizer.save(root / "bpe.json")
    return root


def files_cfg(root, cache, **kw) -> DataConfig:
    return DataConfig(corpus="text", paths=(str(root / "train"),), valid_paths=(str(root / "valid.txt"),),
                      test_paths=(str(root / "test.txt"),), tokenizer=str(root / "bpe.json"), cache_dir=str(cache),
                      **kw)


@pytest.fixture
def small_pieces(monkeypatch):
    """Documents read 700 characters at a time and cut into pieces of about 1,000 (default: 64K for both)."""
    monkeypatch.setattr(corpora, "PIECE_CHARS", 1000)
    monkeypatch.setattr(corpora, "READ_CHARS", 700)


def test_streaming_equals_the_in_memory_path(many_files, tmp_path, monkeypatch, small_pieces):
    appends = []
    original = TokenFile.append
    monkeypatch.setattr(TokenFile, "append", lambda self, ids: (appends.append(len(ids)), original(self, ids)))
    data = build_dataset(files_cfg(many_files, tmp_path / "small", tokenize_batch_bytes=2048))
    tok = data.tokenizer
    docs = [p.read_text() for p in sorted((many_files / "train").glob("**/*.txt"))]
    assert np.array_equal(data.split("train"), tok.encode_documents(docs))  # whole documents, in memory
    for split in ("valid", "test"):
        assert np.array_equal(data.split(split), tok.encode_documents([(many_files / f"{split}.txt").read_text()]))
        assert data.bytes_in_split(split) == len((many_files / f"{split}.txt").read_bytes())
    assert len(appends) > 300  # about one flush per 2 KB of text: 800 KB came through in many small batches
    # and neither the batch nor the piece size changes anything
    monkeypatch.undo()
    big = build_dataset(files_cfg(many_files, tmp_path / "big"))
    assert all(np.array_equal(big.split(s), data.split(s)) for s in ("train", "valid", "test"))


def test_memory_stays_bounded(many_files, tmp_path, small_pieces):
    """Peak Python memory does not grow with the corpus: 4x the files, about the same peak."""
    files = sorted(str(p) for p in (many_files / "train").glob("**/*.txt"))

    def peak_of(paths, cache):
        cfg = files_cfg(many_files, tmp_path / cache, tokenize_batch_bytes=4096)
        cfg = dataclasses.replace(cfg, paths=tuple(paths))
        tracemalloc.start()
        try:
            data = build_dataset(cfg)
            return tracemalloc.get_traced_memory()[1], len(data.split("train"))
        finally:
            tracemalloc.stop()

    peak_of(files[:1], "warm-up")  # imports, tokenizer file and regex caches are not what is measured
    peak_10, tokens_10 = peak_of(files[:10], "ten")
    peak_40, tokens_40 = peak_of(files, "forty")
    corpus_bytes = sum(Path(f).stat().st_size for f in files)
    assert tokens_40 > 3.5 * tokens_10
    assert peak_40 < 1.3 * peak_10 and peak_40 < corpus_bytes / 4, (peak_10, peak_40, corpus_bytes)


def test_caps_take_the_head_of_the_train_split(many_files, tmp_path):
    full = build_dataset(files_cfg(many_files, tmp_path))
    train = np.asarray(full.split("train"))
    eot = full.tokenizer.eot_id
    capped = build_dataset(files_cfg(many_files, tmp_path, max_tokens=12_345))
    assert np.array_equal(capped.split("train"), train[:12_345])
    assert capped.bytes_in_split("train") == len(full.tokenizer.decode(train[:12_345]).replace("<|endoftext|>", ""))
    assert np.array_equal(capped.split("valid"), full.split("valid"))  # held-out splits are not capped
    docs = build_dataset(files_cfg(many_files, tmp_path, max_documents=3))
    third_eot = np.flatnonzero(train == eot)[2]
    assert np.array_equal(docs.split("train"), train[: third_eot + 1])
    files = sorted((many_files / "train").glob("**/*.txt"))[:3]
    assert docs.bytes_in_split("train") == sum(f.stat().st_size for f in files)
    assert build_dataset(files_cfg(many_files, tmp_path, max_tokens=10**9)).split_size("train") == \
        full.split_size("train")  # a cap above the corpus size takes all of it


def test_bpe_is_trained_on_a_sample_only(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "1.txt").write_text("alphabet soup\n" * 3000)  # 42 KB
    (tmp_path / "corpus" / "2.txt").write_text("zygomorphic quartz\n" * 3000)
    seen = []
    original = BPETokenizer.train.__func__
    monkeypatch.setattr(BPETokenizer, "train", classmethod(
        lambda cls, texts, vocab: original(cls, (seen.append(t) or t for t in texts), vocab)))
    cfg = DataConfig(corpus="text", paths=(str(tmp_path / "corpus"),), vocab_size=280, valid_fraction=0.01,
                     test_fraction=0.01, tokenizer_sample_bytes=20_000, cache_dir=str(tmp_path / "cache"))
    tok = build_dataset(cfg).tokenizer
    read = sum(len(t) for t in seen)
    assert 20_000 <= read < 20_000 + 2 * (1 << 16)  # the sample, rounded up to whole pieces
    assert "zygomorphic" not in "".join(seen)
    assert len(tok.encode(" soup")) == 1 and len(tok.encode(" quartz")) > 2  # merges come from the sample only
    assert len(list((tmp_path / "cache" / "tokenizers").glob("*.json"))) == 1


def pieces(docs):
    """Documents as single-piece streams."""
    return ((d, True) for d in docs)


def test_every_nth_rule_is_even_and_deterministic():
    routed = list(EveryNth(0.1, 0.1).route(pieces(f"doc{i}" for i in range(40))))
    test = [t for s, t, _ in routed if s == "test"]
    valid = [t for s, t, _ in routed if s == "valid"]
    assert test == ["doc9", "doc19", "doc29", "doc39"]  # one row in ten, evenly spaced
    assert valid == ["doc8", "doc18", "doc28", "doc38"]  # one in nine of the other 36 rows (doc9 is test)
    assert len([1 for s, _, _ in routed if s == "train"]) == 32
    # multi-piece documents stay whole, and a cap on training documents ends the stream
    stream = [("a", False), ("b", True)] * 30
    capped = list(cap_documents(EveryNth(0.5, 0.0).route(iter(stream)), max_documents=3))
    assert [s for s, _, _ in capped] == ["train", "train", "test", "test"] * 2 + ["train", "train"]


def test_head_bytes_cut_on_exact_boundaries():
    doc = "".join(f"line {i} of text\n" for i in range(100))  # 1,590 bytes
    routed = list(HeadBytes(test_bytes=100, valid_bytes=200).route(iter([(doc[:800], False), (doc[800:], True)])))
    by_split = {s: "".join(t for t2, t, _ in routed if t2 == s) for s in ("test", "valid", "train")}
    assert by_split["test"] + by_split["valid"] + by_split["train"] == doc
    assert 100 <= len(by_split["test"]) < 100 + 16 and by_split["test"].endswith("\n")
    assert 200 <= len(by_split["valid"]) < 200 + 16 and by_split["valid"].endswith("\n")
    ends = [(s, end) for s, _, end in routed]
    assert ends == [("test", True), ("valid", True), ("train", False), ("train", True)]
