"""Run configuration: TrainConfig, RunConfig = {model, train, data}, and the run presets.

Every field is addressable by a dotted key (``train.max_steps``, ``model.decay.kind``, ``data.corpus``) through
``decaylab.config.with_overrides``; unknown keys and invalid values are answered with a clear ValueError.
A run's configuration is resolved in this order: preset (or the defaults) -> config file (.json/.toml) -> ``--set``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from decaylab.training.optim import SCHEDULES


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: optimizer, schedule, batch, logging, checkpoints and devices."""

    max_steps: int = 1000
    """Optimizer steps to take."""
    batch_size: int = 16
    """Sequences per optimizer step, over all devices and accumulation micro-steps (the global batch)."""
    seq_len: int = 256
    """Tokens per training sequence."""
    grad_accum: int = 1
    """Micro-steps per optimizer step; each device processes batch_size / (world_size * grad_accum) sequences."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine and wsd)."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    schedule: str = "cosine"
    """Learning-rate schedule: cosine, wsd (warmup-stable-decay) or constant."""
    wsd_decay_fraction: float = 0.2
    """wsd only: fraction of max_steps spent decaying to min_lr_ratio * lr at the end."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices."""
    decay_everything: bool = False
    """Apply weight decay to every parameter (decay parameters, norms, embeddings), as the paper's code did."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    seed: int = 0
    """Seeds model initialization, dropout and the data order."""
    log_every: int = 10
    """Write a metrics.jsonl line every this many steps (and at the last step)."""
    eval_every: int = 0
    """Evaluate validation loss every this many steps (0: only at the end)."""
    eval_batches: int | None = None
    """Validation batches per periodic evaluation (None: the whole split)."""
    eval_batch_size: int | None = None
    """Batch size for validation (None: the per-device training micro-batch)."""
    ckpt_every: int = 0
    """Write a checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when available (the local GPU of each rank under torchrun), else cpu."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    compile: bool = False
    """Wrap the model in torch.compile (first steps are slow while it compiles)."""
    fsdp: bool = False
    """Under torchrun, shard parameters with FSDP2 (fully_shard) instead of replicating them with DDP."""
    tensorboard: bool = False
    """Also log metrics to RUN_DIR/tensorboard (needs the tensorboard package)."""
    progress: bool = True
    """Show a progress bar with loss, tokens/s and ETA."""

    def __post_init__(self) -> None:
        SCHEDULES.get(self.schedule)  # unknown schedule -> "did you mean"
        positive = ("max_steps", "batch_size", "seq_len", "grad_accum", "log_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "eval_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 0 (0 disables it)")
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0 < self.wsd_decay_fraction <= 1:
            raise ValueError(f"train.wsd_decay_fraction={self.wsd_decay_fraction} must be in (0, 1]")
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"train.warmup_steps={self.warmup_steps} exceeds train.max_steps={self.max_steps}; lower the warmup"
            )
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ValueError("train.weight_decay and train.grad_clip must be >= 0 and train.eps > 0")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be in [0, 1)")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum={self.grad_accum}"
            )
        for name in ("eval_batches", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name}={value} must be >= 1 or None")

    def micro_batch(self, world_size: int) -> int:
        """Sequences one device processes per micro-step."""
        if self.batch_size % (world_size * self.grad_accum):
            raise ValueError(
                f"train.batch_size={self.batch_size} must be divisible by world_size * train.grad_accum = "
                f"{world_size} * {self.grad_accum}; change the batch size or the accumulation"
            )
        return self.batch_size // (world_size * self.grad_accum)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len
