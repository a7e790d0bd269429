"""A run's tokenizer as a transformers ``PreTrainedTokenizerFast`` (one converter per decaylab tokenizer type).

* word level (PTB): a `tokenizers` WordLevel model over the same vocabulary; words split on whitespace and every
  line break (blank lines included, as one) becomes ``<eos>``, so a text ending in a newline encodes exactly as
  decaylab encodes it (decaylab also closes a last line that has no newline with ``<eos>``). ``<eos>`` is the
  end-of-sequence, padding and (for lm-evaluation-harness) prefix token; ``<unk>`` the unknown token.
* byte-level BPE: the `tokenizers` tokenizer itself; ``<|endoftext|>``, when present, is BOS, EOS and padding.
* integer (MQAR): no text vocabulary, nothing to convert.
"""

from __future__ import annotations

from typing import Any, Callable

from decaylab.data.tokenizer import END_OF_TEXT, BPETokenizer, IntegerTokenizer, WordTokenizer

LINE_BREAKS = r"\n(\s*\n)*"  # one line break, or several with only blanks between them (blank lines give no <eos>)


def _word(tok: WordTokenizer) -> dict[str, Any]:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(tok.vocab)}, unk_token=tok.unk))
    backend.normalizer = normalizers.Replace(Regex(LINE_BREAKS), f" {tok.eos} ")
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return dict(tokenizer_object=backend, unk_token=tok.unk, eos_token=tok.eos, pad_token=tok.eos)


def _bpe(tok: BPETokenizer) -> dict[str, Any]:
    special = {} if tok.eot_id is None else dict(bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT)
    return dict(tokenizer_object=tok.tokenizer, **special)


def _integer(tok: IntegerTokenizer) -> dict[str, Any]:
    raise ValueError("this run uses the integer tokenizer of a synthetic task (MQAR), which has no text vocabulary to "
                     "convert; export the model alone with --no-tokenizer")


CONVERTERS: dict[type, Callable[[Any], dict[str, Any]]] = {WordTokenizer: _word, BPETokenizer: _bpe,
                                                           IntegerTokenizer: _integer}


def to_transformers(tokenizer: Any, vocab_size: int | None = None):
    """A ``PreTrainedTokenizerFast`` (left padding, for generation) for a decaylab tokenizer.

    ``vocab_size``: the model's; a tokenizer with ids beyond it cannot serve that model (ValueError).
    """
    from transformers import PreTrainedTokenizerFast

    convert = CONVERTERS.get(type(tokenizer))
    if convert is None:
        raise ValueError(f"cannot convert a {type(tokenizer).__name__} to a transformers tokenizer; decaylab converts "
                         f"{', '.join(c.__name__ for c in CONVERTERS)}")
    if vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {vocab_size} embedding "
                         f"rows; pass the tokenizer the model was trained with (--tokenizer FILE)")
    return PreTrainedTokenizerFast(padding_side="left", **convert(tokenizer))
