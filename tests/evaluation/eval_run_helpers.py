"""Helpers that build tiny run directories for the evaluation tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path

from decaylab.config import save_json, with_overrides
from decaylab.data import DataConfig, build_dataset
from decaylab.model import DecayLM
from decaylab.run.config import RunConfig

WORDS = "the cat sat on a mat while dogs ran far away from home and birds sang in old green trees".split()
TRAIN = {"train.max_steps": 3, "train.batch_size": 4, "train.seq_len": 32, "train.warmup_steps": 1,
         "train.progress": False, "train.ckpt_every": 2, "train.device": "cpu"}


def text_data(root: Path) -> DataConfig:
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(500)))
    return DataConfig(corpus="text", paths=(str(corpus),), vocab_size=300, cache_dir=str(root / "cache"),
                      valid_fraction=0.1, test_fraction=0.1)


def assemble_run(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """A finished-looking run directory with an untrained model (config.json, tokenizer.json, model/)."""
    data = build_dataset(cfg.data, run_dir)  # writes the run's tokenizer.json
    cfg = with_overrides(cfg, {"model.vocab_size": data.vocab_size})
    save_json(cfg, run_dir / "config.json")
    DecayLM(cfg.model).save_pretrained(run_dir / "model")
    return cfg
