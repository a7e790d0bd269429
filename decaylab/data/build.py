"""``build_dataset(cfg, run_dir=None)``: corpus -> tokenizer -> cached memory-mapped token arrays -> dataset.

Which tokenizer is used, in order: the run's own ``RUN_DIR/tokenizer.json`` (so evaluation and resumed runs
see exactly the ids the model was trained on), else ``data.tokenizer``, else the corpus default: the PTB word
vocabulary, or a byte-level BPE trained on the training split (cached under ``CACHE/tokenizers``). The chosen
tokenizer is saved to ``RUN_DIR/tokenizer.json`` when a run directory is given.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from decaylab.data.cache import TokenCache, cache_key, cache_root
from decaylab.data.config import DataConfig
from decaylab.data.corpora import CorpusText, hf_text, local_text, ptb_text
from decaylab.data.dataset import TokenDataset
from decaylab.data.mqar import MQARDataset, MQARTask
from decaylab.data.tokenizer import BPETokenizer, WordTokenizer, load_tokenizer, tokenizer_from_json
from decaylab.registry import Registry

log = logging.getLogger("decaylab.data")
RUN_TOKENIZER = "tokenizer.json"

# corpus name -> builder(cfg, run_dir) -> dataset
CORPORA: Registry[Callable[[DataConfig, Path | None], Any]] = Registry("corpus")


def build_dataset(cfg: DataConfig, run_dir: str | Path | None = None):
    """The dataset described by ``cfg`` (a ``TokenDataset`` or an ``MQARDataset``; see their docstrings)."""
    return CORPORA.get(cfg.corpus)(cfg, Path(run_dir) if run_dir is not None else None)


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


def _cached_bpe(cfg: DataConfig, corpus: CorpusText) -> BPETokenizer:
    """Train byte-level BPE on the training split once per (training text, vocab size); reuse it after."""
    key = cache_key(corpus.content_hash, str(cfg.bpe_vocab_size))
    path = cache_root(cfg.cache_dir) / "tokenizers" / f"bpe-{key}.json"
    if path.exists():
        try:
            return tokenizer_from_json(json.loads(path.read_text()), source=str(path))
        except (ValueError, OSError) as e:
            log.warning("cached tokenizer %s is unreadable (%s); training it again", path, e)
    start = time.perf_counter()
    tokenizer = BPETokenizer.train(corpus.documents["train"], cfg.bpe_vocab_size)
    log.info("trained a %d-token byte-level BPE in %.1f s", tokenizer.vocab_size, time.perf_counter() - start)
    tokenizer.save(path)
    return tokenizer


def _lm_dataset(cfg: DataConfig, run_dir: Path | None, corpus: CorpusText,
                default_tokenizer: Callable[[], Any]) -> TokenDataset:
    configured = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    tokenizer = _run_tokenizer(run_dir, configured) or configured or default_tokenizer()
    key = cache_key(corpus.content_hash, tokenizer.content_hash())
    cache = TokenCache(cache_root(cfg.cache_dir) / f"{cfg.corpus}-{key}")
    loaded = cache.load()
    if loaded is None:
        start = time.perf_counter()
        arrays = {split: tokenizer.encode_documents(docs) for split, docs in corpus.documents.items()}
        for split, ids in arrays.items():
            if len(ids) < 2:
                raise ValueError(f"the {split} split has {len(ids)} tokens; add text to it (at least 2 are needed)")
        splits = cache.store(arrays, {"split_bytes": corpus.split_bytes(), "corpus": corpus.name})
        log.info("tokenized %s into %s in %.1f s", corpus.name, cache.directory, time.perf_counter() - start)
        split_bytes = corpus.split_bytes()
    else:
        splits, extra = loaded
        split_bytes = extra["split_bytes"]
    _save_run_tokenizer(run_dir, tokenizer)
    word_level = isinstance(tokenizer, WordTokenizer)
    return TokenDataset(splits, tokenizer, split_bytes=split_bytes, word_level=word_level, name=corpus.name)


@CORPORA.register("ptb")
def build_ptb(cfg: DataConfig, run_dir: Path | None) -> TokenDataset:
    corpus = ptb_text(cfg)
    return _lm_dataset(cfg, run_dir, corpus, lambda: WordTokenizer.from_text(corpus.documents["train"][0]))


@CORPORA.register("text")
def build_text(cfg: DataConfig, run_dir: Path | None) -> TokenDataset:
    corpus = local_text(cfg)
    return _lm_dataset(cfg, run_dir, corpus, lambda: _cached_bpe(cfg, corpus))


@CORPORA.register("hf")
def build_hf(cfg: DataConfig, run_dir: Path | None) -> TokenDataset:
    corpus = hf_text(cfg)
    return _lm_dataset(cfg, run_dir, corpus, lambda: _cached_bpe(cfg, corpus))


@CORPORA.register("mqar")
def build_mqar(cfg: DataConfig, run_dir: Path | None) -> MQARDataset:
    task = MQARTask(
        vocab_size=cfg.mqar_vocab_size,
        num_kv_pairs=cfg.mqar_num_kv_pairs,
        num_queries=cfg.mqar_num_queries or cfg.mqar_num_kv_pairs,
        power_a=cfg.mqar_power_a,
        random_filler=cfg.mqar_random_filler,
    )
    dataset = MQARDataset(task, cfg.mqar_eval_examples)
    saved = _run_tokenizer(run_dir, dataset.tokenizer)  # raises if the run was trained with another vocabulary
    if saved is None:
        _save_run_tokenizer(run_dir, dataset.tokenizer)
    return dataset
