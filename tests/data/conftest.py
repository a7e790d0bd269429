"""Fixtures for the data tests: a private token cache per test session and a small local text corpus."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from decaylab.data import DataConfig, IntegerTokenizer, TokenDataset, build_dataset

WORDS = ("decay", "linear", "attention", "state", "gate", "token", "model", "vector", "scalar", "head",
         "chunk", "kernel", "the", "a", "of", "to", "and", "is", "was", "in")


def random_text(rng: random.Random, lines: int) -> str:
    """ASCII sentences with punctuation, digits and irregular spacing."""
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 9999)))
        sep = "  " if rng.random() < 0.1 else " "
        out.append(sep.join(words) + rng.choice([".", ",", "!", "?", ";", ""]))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("decaylab-cache"))


@pytest.fixture(scope="session")
def ptb(cache_dir):
    return build_dataset(DataConfig(cache_dir=cache_dir))


@pytest.fixture
def text_dir(tmp_path) -> Path:
    """A directory of three text files (about 2,000 lines in all) plus a file the default glob skips."""
    rng = random.Random(0)
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(random_text(rng, 800))
    (root / "b.txt").write_text(random_text(rng, 600))
    (root / "sub" / "c.txt").write_text(random_text(rng, 600))
    (root / "notes.md").write_text("not part of the corpus\n")
    return root


def random_token_dataset(num_tokens: int, vocab_size: int = 97, seed: int = 0) -> TokenDataset:
    rng = np.random.default_rng(seed)
    splits = {s: rng.integers(0, vocab_size, size=n).astype(np.uint16)
              for s, n in (("train", num_tokens), ("valid", num_tokens // 3 + 7), ("test", num_tokens // 4 + 5))}
    return TokenDataset(splits, IntegerTokenizer(vocab_size), split_bytes={s: 0 for s in splits},
                        word_level=False, name="random")


@pytest.fixture
def make_token_dataset():
    """Builds a TokenDataset over random ids (no corpus needed), for batch-logic tests."""
    return random_token_dataset
