"""decaylab tokenizers as transformers tokenizers: the same ids as decaylab's own encoding."""

from __future__ import annotations

import pytest

from decaylab.data.tokenizer import BPETokenizer, IntegerTokenizer, WordTokenizer
from decaylab.hf.tokenizer import to_transformers

TEXT = "the company said it will n't \n\n buy the  unit for $ N million\nzebra stripes <unk> ran\n"


def test_word_level_matches_decaylab(tmp_path):
    word = WordTokenizer.from_text("the company said it will n't buy unit for $ N million ran\n")
    hf = to_transformers(word)
    assert hf(TEXT)["input_ids"] == word.encode(TEXT)  # blank line: no <eos>; unknown words: <unk>
    assert hf.eos_token == "<eos>" and hf.unk_token == "<unk>" and hf.pad_token_id == word.eos_id
    hf.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(TEXT)["input_ids"] == word.encode(TEXT)
    assert again.decode(word.encode("the unit ran\n"), skip_special_tokens=True) == "the unit ran"


def test_bpe_matches_decaylab():
    bpe = BPETokenizer.train(["the cat sat on the mat", "dogs ran far away\nfrom home"] * 20, vocab_size=300)
    hf = to_transformers(bpe)
    text = "the dogs sat far from the mat\n and  ran"
    assert hf(text)["input_ids"] == bpe.encode(text)
    assert hf.decode(bpe.encode(text)) == text
    assert hf.bos_token_id == hf.eos_token_id == bpe.end_of_document


def test_unconvertible():
    with pytest.raises(ValueError, match="no text vocabulary"):
        to_transformers(IntegerTokenizer(16))
    with pytest.raises(ValueError, match="embedding rows"):
        to_transformers(WordTokenizer.from_text("a b c d"), vocab_size=3)
    with pytest.raises(ValueError, match="cannot convert a str"):
        to_transformers("gpt2")
