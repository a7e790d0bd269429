"""Pieces: bounded-size cuts of a document that tokenize exactly like the whole document."""

from __future__ import annotations

import random

import numpy as np
import pytest

from decaylab.data import BPETokenizer
from decaylab.data.pieces import MAX_PIECE_FACTOR, cut_pieces, find_exact_cut, is_exact_cut

WORDS = ("decay", "gate", "state", "the", "a", "x1", "42", "don't", "it's", "(k)", "--", "é", "日本")
SPACES = ("\n", " \n", "\n ", "\n\n", " \n\n ", "\t\n", "\n\t", "  ", " ", " ", " ", "\n  \n", "\r\n", "\u3000\n")


def nasty_text(rng: random.Random, n: int) -> str:
    """Words joined by every kind of whitespace run around newlines (trailing spaces, blank lines, tabs)."""
    return "".join(rng.choice(WORDS) + rng.choice(SPACES) for _ in range(n))


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    rng = random.Random(1)
    return BPETokenizer.train([nasty_text(rng, 3000)], 400)


def concat(tokenizer, pieces) -> list[int]:
    return [i for ids in tokenizer.encode_batch(pieces) for i in ids.tolist()]


@pytest.mark.parametrize("seed", range(4))
def test_pieces_tokenize_like_the_whole_document(bpe, seed):
    text = nasty_text(random.Random(seed), 2000)
    pieces = list(cut_pieces([text[i : i + 97] for i in range(0, len(text), 97)], piece_chars=40))
    assert "".join(pieces) == text and len(pieces) > 50
    assert concat(bpe, pieces) == bpe.encode(text)


def test_cutting_at_every_newline_would_not_be_exact(bpe):
    """The control: the rule matters, so the test above can fail."""
    text = nasty_text(random.Random(0), 2000)
    naive = text.splitlines(keepends=True)
    assert "".join(naive) == text
    assert concat(bpe, naive) != bpe.encode(text)


@pytest.mark.parametrize(
    "text,p,exact",
    [
        ("ab\ncd", 3, True),     # rule A: a lone newline between two words
        ("ab \ncd", 4, False),   # the space before the newline belongs to the newline's pre-token
        ("ab \n cd", 4, True),   # rule B: one space after the newline, then a word
        ("ab\n\ncd", 3, True),   # rule B: one newline after the newline, then a word
        ("ab\n\ncd", 4, False),  # the whole text splits "\n", "\n" but "ab\n\n" alone ends in "\n\n"
        ("ab\n  cd", 3, False),  # two spaces after the newline
        ("ab\ncd", 2, False),    # not after a newline
    ],
)
def test_exact_cut_rules(text, p, exact):
    assert is_exact_cut(text, p) is exact


def test_find_exact_cut_respects_its_range():
    text = "one two\nthree four\nfive six\n"
    assert find_exact_cut(text, 1) == 8
    assert find_exact_cut(text, 9) == 19
    assert find_exact_cut(text, 20) == -1  # the last newline has nothing after it to check against
    assert find_exact_cut(text, 1, stop=8) == -1


def test_a_stretch_without_exact_cuts_is_still_bounded():
    rng = np.random.default_rng(0)
    line = " ".join(rng.choice(["ab", "cd", "efg"], 5000))  # one long line, no newline at all
    pieces = list(cut_pieces([line], piece_chars=100))
    assert "".join(pieces) == line
    assert max(len(p) for p in pieces) <= MAX_PIECE_FACTOR * 100
    assert all(p.endswith(" ") for p in pieces[:-1])  # cut after whitespace, never inside a word
