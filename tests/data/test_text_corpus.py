"""Plain-text corpora: file discovery, held-out splits, byte-level BPE that round-trips, tokenizer files."""

from __future__ import annotations

import pytest

from decaylab.data import RUN_TOKENIZER, BPETokenizer, DataConfig, build_dataset, load_tokenizer

ASCII_SAMPLES = [
    "Hello, world!\n",
    "  leading spaces,\ttabs and trailing spaces   \n\n\nblank lines",
    "decay = exp(-A * softplus(x)); log_f <= 0 # 12345 {}[]|\\~`^",
    "x" * 300,
]


def text_cfg(text_dir, cache_dir, vocab_size=300, **kw) -> DataConfig:
    return DataConfig(corpus="text", paths=(str(text_dir),), vocab_size=vocab_size, cache_dir=cache_dir, **kw)


def test_bpe_round_trips_ascii(text_dir, cache_dir):
    data = build_dataset(text_cfg(text_dir, cache_dir))
    tok = data.tokenizer
    assert isinstance(tok, BPETokenizer) and data.vocab_size == tok.vocab_size == 300 and not data.word_level
    for s in ASCII_SAMPLES + [(text_dir / "a.txt").read_text()[:2000]]:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert all(0 <= i < 300 for i in ids)
    assert len(tok.encode("the attention")) < len("the attention")  # merges were learned


def test_splits_documents_and_bytes(text_dir, cache_dir):
    cfg = text_cfg(text_dir, cache_dir, valid_fraction=0.1, test_fraction=0.05)
    data = build_dataset(cfg)
    files = [text_dir / "a.txt", text_dir / "b.txt", text_dir / "sub" / "c.txt"]  # notes.md is not *.txt
    total = sum(len(f.read_bytes()) for f in files)
    sizes = {s: data.bytes_in_split(s) for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == total
    assert sizes["valid"] == pytest.approx(0.1 * total, abs=200)
    assert sizes["test"] == pytest.approx(0.05 * total, abs=200)
    # test is the start of the training files, valid comes next, both end on a line boundary; nothing is lost
    tok, eot = data.tokenizer, "<|endoftext|>"
    text = {s: tok.decode(data.split(s)) for s in ("test", "valid", "train")}
    assert text["test"].endswith("\n" + eot) and text["valid"].endswith("\n" + eot)
    assert (text["test"] + text["valid"] + text["train"]).replace(eot, "") == "".join(f.read_text() for f in files)
    assert all(len(text[s].replace(eot, "").encode()) == sizes[s] for s in text)
    # each document ends with <|endoftext|>: 3 files, the first one cut into test / valid (/ train)
    eot_count = sum(int((data.split(s) == tok.eot_id).sum()) for s in ("train", "valid", "test"))
    assert eot_count in (4, 5)


def test_separate_valid_and_test_files(text_dir, tmp_path, cache_dir):
    valid, test = tmp_path / "valid.txt", tmp_path / "test.txt"
    valid.write_text("the decay of the state\n")
    test.write_text("a gate and a kernel\n")
    cfg = text_cfg(text_dir, cache_dir, valid_paths=(str(valid),), test_paths=(str(test),))
    data = build_dataset(cfg)
    assert data.tokenizer.decode(data.split("valid")) == "the decay of the state\n<|endoftext|>"
    assert data.bytes_in_split("test") == len("a gate and a kernel\n")


def test_given_tokenizer_file_is_used_and_saved_with_the_run(text_dir, tmp_path, cache_dir):
    first = build_dataset(text_cfg(text_dir, cache_dir))
    path = tmp_path / "my-tokenizer.json"
    first.tokenizer.save(path)
    run_dir = tmp_path / "run"
    data = build_dataset(DataConfig(corpus="text", paths=(str(text_dir),), tokenizer=str(path),
                                    cache_dir=cache_dir), run_dir)
    assert (run_dir / RUN_TOKENIZER).exists()
    reloaded = load_tokenizer(run_dir / RUN_TOKENIZER)
    assert reloaded.encode(ASCII_SAMPLES[1]) == first.tokenizer.encode(ASCII_SAMPLES[1])
    assert (data.split("train") == first.split("train")).all()
    # the run keeps its tokenizer: rebuilding with a different vocabulary into the same run is refused
    other = tmp_path / "other.json"
    build_dataset(text_cfg(text_dir, cache_dir, vocab_size=280)).tokenizer.save(other)
    with pytest.raises(ValueError, match="a run must keep its tokenizer"):
        build_dataset(DataConfig(corpus="text", paths=(str(text_dir),), tokenizer=str(other), cache_dir=cache_dir),
                      run_dir)


def test_run_tokenizer_wins_over_retraining(text_dir, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    trained = build_dataset(text_cfg(text_dir, cache_dir), run_dir)
    (text_dir / "a.txt").write_text((text_dir / "a.txt").read_text() + "brand new words appear here\n")
    again = build_dataset(text_cfg(text_dir, cache_dir), run_dir)
    assert again.tokenizer.content_hash() == trained.tokenizer.content_hash()
    assert "brand new words appear here" in again.tokenizer.decode(again.split("train"))  # tokenized anew
    assert "brand new words" not in trained.tokenizer.decode(trained.split("train"))


def test_a_pinned_model_vocabulary_is_checked_before_tokenizing(text_dir, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"model.vocab_size=5000 but the tokenizer of data.corpus='text' has 300 "
                                         r"tokens; set model.vocab_size=300"):
        build_dataset(text_cfg(text_dir, str(cache)), vocab_size=5000)
    assert [p.name for p in cache.iterdir()] == ["tokenizers"]  # the BPE was trained, nothing was tokenized
    assert build_dataset(text_cfg(text_dir, str(cache)), vocab_size=300).vocab_size == 300
