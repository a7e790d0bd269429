"""``DataConfig``: the ``data.`` settings of a run (which corpus, how it is split, tokenized and cached).

One frozen dataclass covers every corpus; each corpus declares which fields it reads (``CORPUS_FIELDS``), and
setting a field that the chosen corpus ignores is an error rather than a silent no-op.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from decaylab.registry import closest

CORPUS_NAMES = ("ptb", "text", "hf", "mqar")

# Fields every corpus may set, then the fields each corpus reads in addition.
COMMON_FIELDS = {"corpus", "cache_dir", "tokenizer"}
CORPUS_FIELDS: dict[str, set[str]] = {
    "ptb": set(),
    "text": {"paths", "valid_paths", "test_paths", "glob", "valid_fraction", "test_fraction", "vocab_size"},
    "hf": {
        "hf_path", "hf_name", "hf_text_field", "hf_train_split", "hf_valid_split", "hf_test_split",
        "hf_join_rows", "hf_streaming", "valid_fraction", "test_fraction", "vocab_size",
    },
    "mqar": {
        "vocab_size", "mqar_num_kv_pairs", "mqar_num_queries", "mqar_power_a", "mqar_random_filler",
        "mqar_eval_examples",
    },
}

# Streaming settings shared by the corpora that are tokenized with BPE ('text' and 'hf').
STREAM_FIELDS = {"max_tokens", "max_documents", "tokenizer_sample_bytes", "tokenize_batch_bytes"}
CORPUS_FIELDS["text"] |= STREAM_FIELDS
CORPUS_FIELDS["hf"] |= STREAM_FIELDS

PTB_VOCAB = 10_000  # the Mikolov PTB vocabulary (incl. <unk> and <eos>)
DEFAULT_BPE_VOCAB = 8192
DEFAULT_TOKENIZER_SAMPLE_BYTES = 100_000_000
DEFAULT_MQAR_VOCAB = 8192
DEFAULT_HOLDOUT_FRACTION = 0.01
MIN_BPE_VOCAB = 257  # 256 byte tokens + the end-of-text token


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    corpus: str = "ptb"
    """Which corpus: 'ptb' (Penn Treebank, word level, offline), 'text' (local files + byte-level BPE),
    'hf' (a Hugging Face `datasets` corpus, needs `pip install decaylab[hf]`), 'mqar' (synthetic recall)."""

    cache_dir: str | None = None
    """Where tokenized arrays are cached; default $DECAYLAB_CACHE, else ~/.cache/decaylab."""

    tokenizer: str | None = None
    """Path to a tokenizer file (a `tokenizers` tokenizer.json or one saved by decaylab); for 'text'/'hf' it
    replaces BPE training."""

    vocab_size: int | None = None
    """'text'/'hf': size of the byte-level BPE to train (default 8192). 'mqar': token vocabulary (default 8192)."""

    # --- corpus = "text" or "hf": streaming ---
    max_tokens: int | None = None
    """Cap on the training split: the first `max_tokens` tokens of the training text (after the held-out
    splits are taken), e.g. 2_000_000_000 of a 10B-token corpus. Default: all of it."""

    max_documents: int | None = None
    """Cap on the training split in documents (files for 'text', rows for 'hf'). Default: all of them."""

    tokenizer_sample_bytes: int = DEFAULT_TOKENIZER_SAMPLE_BYTES
    """BPE training reads only the first this-many bytes of the training split (default 100 MB)."""

    tokenize_batch_bytes: int = 1 << 22
    """Text encoded per batch and appended to the cache file per flush (4 MiB); bounds memory (about 30 bytes
    per character of a batch while `tokenizers` holds its encodings), never changes the tokens."""

    # --- corpus = "text" ---
    paths: tuple[str, ...] = ()
    """Text files or directories (searched with `glob`) that make up the training text."""

    valid_paths: tuple[str, ...] = ()
    """Files or directories for the validation split; if empty, the last `valid_fraction` of `paths` is used."""

    test_paths: tuple[str, ...] = ()
    """Files or directories for the test split; if empty, the last `test_fraction` of `paths` is used."""

    glob: str = "**/*.txt"
    """Pattern for files inside directories given in `paths`/`valid_paths`/`test_paths`."""

    valid_fraction: float | None = None
    """Share of the training source held out for validation when the corpus has no valid split of its own;
    default 0.01. 'text': the text right after the test part at the start of the training files (bytes, cut
    at a line boundary). 'hf': evenly spaced rows (one row in 1/fraction). Setting it together with
    `valid_paths` (or an HF valid split) is an error."""

    test_fraction: float | None = None
    """Like `valid_fraction`, for the test split ('text': the very start of the training files)."""

    # --- corpus = "hf" ---
    hf_path: str | None = None
    """`datasets` path: a hub name ('wikitext'), a local dataset directory, or a `save_to_disk` directory."""

    hf_name: str | None = None
    """`datasets` configuration name, e.g. 'wikitext-103-raw-v1'."""

    hf_text_field: str = "text"
    """Column holding the text."""

    hf_train_split: str = "train"
    """Split used for training."""

    hf_valid_split: str | None = "validation"
    """Split used for validation (None: carve `valid_fraction` from the training split)."""

    hf_test_split: str | None = "test"
    """Split used for testing (None: carve `test_fraction` from the training split)."""

    hf_streaming: bool = False
    """Read the dataset with `load_dataset(..., streaming=True)`: nothing is downloaded or converted up front,
    so `data.max_tokens` of a huge corpus costs only the text it reads. `save_to_disk` directories are always
    read lazily (memory-mapped), with or without it."""

    hf_join_rows: bool = False
    """Rows are lines of one text (e.g. wikitext): join each split into one document. Otherwise every row is a
    document, ended by <|endoftext|>."""

    # --- corpus = "mqar" ---
    mqar_num_kv_pairs: int = 8
    """Key-value pairs shown at the start of each MQAR sequence."""

    mqar_num_queries: int | None = None
    """Keys queried later in the sequence (distinct, at most `mqar_num_kv_pairs`; default: all of them)."""

    mqar_power_a: float = 0.01
    """Power-law exponent of the query placement (small: queries close to the pairs; 1.0: uniform)."""

    mqar_random_filler: bool = True
    """Fill non-query positions with random tokens (Zoology's default) instead of token 0."""

    mqar_eval_examples: int = 1000
    """Sequences in each of the MQAR valid/test sets."""

    def __post_init__(self) -> None:
        if self.corpus not in CORPUS_NAMES:
            raise ValueError(
                f"unknown corpus data.corpus={self.corpus!r}.{closest(self.corpus, CORPUS_NAMES)} "
                f"Available: {', '.join(CORPUS_NAMES)}"
            )
        self._reject_unused_fields()
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 0.5:
                raise ValueError(f"data.{name}={value} must be in [0, 0.5)")
        getattr(self, f"_check_{self.corpus}")()

    def _reject_unused_fields(self) -> None:
        used = COMMON_FIELDS | CORPUS_FIELDS[self.corpus]
        for f in dataclasses.fields(self):
            if f.name not in used and getattr(self, f.name) != f.default:
                users = [c for c, fields in CORPUS_FIELDS.items() if f.name in fields]
                raise ValueError(
                    f"data.{f.name} is not used by data.corpus={self.corpus!r} (only by "
                    f"{', '.join(repr(u) for u in users)}); remove it or change data.corpus"
                )

    def _check_ptb(self) -> None:
        pass  # PTB has its fixed 10k vocabulary; vocab_size is rejected by _reject_unused_fields

    def _check_text(self) -> None:
        if not self.paths:
            raise ValueError("data.corpus='text' needs data.paths=[files or directories of plain text]")
        self._check_holdout("valid", bool(self.valid_paths))
        self._check_holdout("test", bool(self.test_paths))
        self._check_bpe_vocab()
        self._check_stream()

    def _check_stream(self) -> None:
        for name in ("max_tokens", "max_documents", "tokenizer_sample_bytes", "tokenize_batch_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"data.{name}={value!r} must be a positive integer")
        if self.tokenizer is not None and self.tokenizer_sample_bytes != DEFAULT_TOKENIZER_SAMPLE_BYTES:
            raise ValueError(
                "data.tokenizer_sample_bytes sizes BPE training but data.tokenizer gives a tokenizer; set only one"
            )

    def _check_hf(self) -> None:
        if not self.hf_path:
            raise ValueError("data.corpus='hf' needs data.hf_path (e.g. 'wikitext', or a local dataset directory)")
        self._check_holdout("valid", self.hf_valid_split is not None)
        self._check_holdout("test", self.hf_test_split is not None)
        self._check_bpe_vocab()
        self._check_stream()

    def _check_holdout(self, split: str, has_own_split: bool) -> None:
        if has_own_split and getattr(self, f"{split}_fraction") is not None:
            raise ValueError(
                f"data.{split}_fraction is set but the {split} split already comes from its own source; "
                f"drop data.{split}_fraction or the separate {split} split"
            )

    def _check_bpe_vocab(self) -> None:
        if self.tokenizer is not None and self.vocab_size is not None:
            raise ValueError("data.vocab_size trains a new BPE but data.tokenizer gives one; set only one of them")
        if self.vocab_size is not None and self.vocab_size < MIN_BPE_VOCAB:
            raise ValueError(
                f"data.vocab_size={self.vocab_size} is too small for byte-level BPE; use at least {MIN_BPE_VOCAB} "
                f"(256 bytes + end-of-text), typically 8192-32768"
            )

    def _check_mqar(self) -> None:
        if self.tokenizer is not None:
            raise ValueError("data.tokenizer is not used by data.corpus='mqar' (tokens are integers); remove it")
        pairs, queries = self.mqar_num_kv_pairs, self.mqar_num_queries
        if pairs < 1:
            raise ValueError(f"data.mqar_num_kv_pairs={pairs} must be >= 1")
        if queries is not None and not 1 <= queries <= pairs:
            raise ValueError(f"data.mqar_num_queries={queries} must be between 1 and data.mqar_num_kv_pairs={pairs}")
        if self.mqar_power_a <= 0:
            raise ValueError(f"data.mqar_power_a={self.mqar_power_a} must be > 0 (1.0 = uniform query placement)")
        if self.mqar_eval_examples < 1:
            raise ValueError(f"data.mqar_eval_examples={self.mqar_eval_examples} must be >= 1")
        vocab = self.mqar_vocab_size
        # keys come from [1, vocab/2) and values from [vocab/2, vocab): each half needs `pairs` distinct tokens
        if vocab // 2 - 1 < pairs:
            raise ValueError(
                f"data.vocab_size={vocab} is too small for {pairs} key-value pairs; use at least {2 * pairs + 2}"
            )

    def vocab_size_known(self) -> tuple[int | None, int | None]:
        """(exactly, at most): what these settings say about the tokenizer's size before any text is read.

        PTB has exactly 10,000 words and MQAR exactly its vocabulary; a BPE trained here has at most
        ``data.vocab_size`` tokens (a small corpus runs out of merges); a tokenizer file is known once read.
        """
        if self.tokenizer is not None:
            return None, None
        if self.corpus == "ptb":
            return PTB_VOCAB, PTB_VOCAB
        if self.corpus == "mqar":
            return self.mqar_vocab_size, self.mqar_vocab_size
        return None, self.bpe_vocab_size

    @property
    def mqar_vocab_size(self) -> int:
        return self.vocab_size if self.vocab_size is not None else DEFAULT_MQAR_VOCAB

    @property
    def bpe_vocab_size(self) -> int:
        return self.vocab_size if self.vocab_size is not None else DEFAULT_BPE_VOCAB

    def holdout_fraction(self, split: str) -> float:
        value = getattr(self, f"{split}_fraction")
        return DEFAULT_HOLDOUT_FRACTION if value is None else value
