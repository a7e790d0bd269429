"""A run small enough for unit tests: a 2-layer model on synthetic MQAR data (no files, no tokenizer training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from decaylab.config import with_overrides
from decaylab.data import DataConfig
from decaylab.model import ModelConfig
from decaylab.run.config import RunConfig, TrainConfig
from decaylab.rundir import read_metrics

SMALL_TRAIN = dict(
    max_steps=8, batch_size=4, seq_len=24, lr=3e-3, warmup_steps=2, log_every=1, ckpt_every=3,
    keep_checkpoints=3, progress=False, eval_every=4, eval_batches=1,
)


def small_run(**overrides: Any) -> RunConfig:
    """The test run, with dotted overrides (``{"train.grad_accum": 2}``)."""
    cfg = RunConfig(
        model=ModelConfig.from_preset("tiny", {"vocab_size": 64, "dropout": 0.1}),
        train=TrainConfig(**SMALL_TRAIN),
        data=DataConfig(corpus="mqar", vocab_size=64, mqar_num_kv_pairs=4, mqar_eval_examples=16),
    )
    return with_overrides(cfg, overrides)


def curve(run_dir: Path) -> list[tuple]:
    """A run's logged curve, for exact comparisons: (step, loss, gradient norm, learning rate, validation loss)."""
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"], r.get("val_loss")) for r in read_metrics(run_dir)]
