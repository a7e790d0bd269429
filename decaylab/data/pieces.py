"""Cut a document's text into pieces of bounded size that tokenize exactly like the whole document.

Byte-level BPE (ours, GPT-2's) first splits text into pre-tokens with the regex
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`` and merges only inside a
pre-token. Encoding ``a + b`` as ``encode(a) + encode(b)`` is therefore exact when the cut is a pre-token
boundary of the whole text *and* each side, alone, splits its end/start the same way. A whitespace run
``W`` before a non-space character ``c`` is split as ``W[:-1]``, ``W[-1]`` (the last space may join ``c``), so a
cut right after a newline ``\\n`` at position ``p`` is exact when either

- (A) the ``\\n`` is the whole run: ``text[p-2]`` is not whitespace (or absent) and ``text[p]`` is not, or
- (B) exactly one ASCII whitespace character follows it, then a non-space: ``text[p] in " \\t\\n\\r\\v\\f"``
  and ``text[p+1]`` is not whitespace; the left side then ends in the run ``A + "\\n"``, one pre-token either way.

Python's ``str.isspace`` is a superset of Unicode White_Space (the regex's ``\\s``), so "not whitespace" here is
never wrong in the unsafe direction. The word and integer tokenizers work line by line, so every such cut is
exact for them too. A stretch with no exact cut (e.g. one giant line) is cut at its last newline, else its
last whitespace, once it reaches ``MAX_PIECE_FACTOR`` pieces' worth: memory stays bounded and only that one
boundary may tokenize differently.
"""

from __future__ import annotations

from typing import Iterable, Iterator

PIECE_CHARS = 1 << 16  # target characters per piece: small enough to hold out splits finely, big enough to batch
MAX_PIECE_FACTOR = 16  # a piece grows to at most this many targets while waiting for an exact cut
_ONE_SPACE = frozenset(" \t\n\r\x0b\x0c")


def is_exact_cut(text: str, p: int) -> bool:
    """True if cutting ``text`` before index ``p`` (``0 < p < len(text) - 1``) tokenizes exactly (see above)."""
    if text[p - 1] != "\n":
        return False
    if not text[p].isspace():
        return p < 2 or not text[p - 2].isspace()  # rule A
    return text[p] in _ONE_SPACE and not text[p + 1].isspace()  # rule B


def find_exact_cut(text: str, start: int, stop: int | None = None) -> int:
    """The first exact cut ``p`` with ``start <= p < stop`` (``stop`` at most ``len(text) - 1``), or -1."""
    stop = len(text) - 1 if stop is None else min(stop, len(text) - 1)
    p = text.find("\n", max(start - 1, 0), stop) + 1
    while 0 < p < stop:
        if p >= start and is_exact_cut(text, p):
            return p
        p = text.find("\n", p, stop) + 1
    return -1


def _fallback_cut(text: str) -> int:
    """Where to cut a stretch without an exact cut: after its last newline, else its last whitespace."""
    cut = text.rfind("\n") + 1
    if cut <= 0:
        cut = max(text.rfind(" "), text.rfind("\t")) + 1
    return cut if 0 < cut < len(text) else len(text)


def cut_pieces(chunks: Iterable[str], piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """Re-cut the consecutive text ``chunks`` of one document into pieces of about ``piece_chars`` characters.

    ``"".join(pieces) == "".join(chunks)``; every boundary is an exact cut unless a stretch of
    ``MAX_PIECE_FACTOR * piece_chars`` characters has none. Holds at most about that many characters plus one
    chunk in memory.
    """
    buffer = ""
    searched = 0  # exact cuts before this index were already looked for
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        while len(buffer) > piece_chars:
            p = find_exact_cut(buffer, max(piece_chars, searched))
            if p < 0:
                if len(buffer) < MAX_PIECE_FACTOR * piece_chars:
                    searched = max(len(buffer) - 2, piece_chars)  # the next chunk may complete a cut here
                    break
                p = _fallback_cut(buffer[: MAX_PIECE_FACTOR * piece_chars])
            yield buffer[:p]
            buffer, searched = buffer[p:], 0
    if buffer:
        yield buffer
