"""AdamW with weight-decay groups, and learning-rate schedules as pure functions of the step.

A schedule maps the optimizer step ``s`` (0-based: the step about to be taken) to a multiplier of
``train.lr``. Every schedule starts with a linear warmup, lr(s) = lr * (s + 1) / W for s < W, then:

    constant  lr(s) = lr
    cosine    lr(s) = lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,   p = (s - W) / (S - W)
    wsd       warmup-stable-decay: lr until the last ``wsd_decay_fraction * S`` steps, then linear to lr_min

with lr_min = ``min_lr_ratio * lr`` and S = ``max_steps``. Being pure functions of the step, the schedules
need no state of their own: a resumed run only has to know which step it is at.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from decaylab.registry import Registry

if TYPE_CHECKING:
    from decaylab.training.config import TrainConfig

# name -> f(step, train_config) -> multiplier in [min_lr_ratio, 1] after warmup
SCHEDULES: Registry[Callable[[int, "TrainConfig"], float]] = Registry("learning-rate schedule")


def _warmup(step: int, cfg: "TrainConfig") -> float | None:
    """The warmup multiplier, or None once warmup is over."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return None


@SCHEDULES.register("constant")
def constant_schedule(step: int, cfg: "TrainConfig") -> float:
    warm = _warmup(step, cfg)
    return 1.0 if warm is None else warm


@SCHEDULES.register("cosine")
def cosine_schedule(step: int, cfg: "TrainConfig") -> float:
    warm = _warmup(step, cfg)
    if warm is not None:
        return warm
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("wsd")
def wsd_schedule(step: int, cfg: "TrainConfig") -> float:
    warm = _warmup(step, cfg)
    if warm is not None:
        return warm
    decay_steps = max(1, round(cfg.wsd_decay_fraction * cfg.max_steps))
    decay_start = cfg.max_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / decay_steps)
    return 1.0 - (1.0 - cfg.min_lr_ratio) * progress


def learning_rate(step: int, cfg: "TrainConfig") -> float:
    """The learning rate for optimizer step ``step`` (0-based)."""
    return cfg.lr * SCHEDULES.get(cfg.schedule)(step, cfg)


def build_optimizer(model: torch.nn.Module, cfg: "TrainConfig", capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups.

    ``model.param_groups`` puts matrices in a group with weight decay and leaves decay parameters, norms and
    embeddings without it; ``train.decay_everything`` applies weight decay to every parameter, as the paper's
    training code did (it pulls the learned decays toward their zero-parameter values over training).
    ``capturable`` keeps the step counts on the GPU so that the update can be captured in a CUDA graph.
    """
    groups = model.param_groups(weight_decay=cfg.weight_decay, decay_everything=cfg.decay_everything)
    groups = [dict(g, params=list(g["params"])) for g in groups]
    groups = [g for g in groups if g["params"]]
    fused = None
    if all(p.is_cuda for g in groups for p in g["params"]):
        fused = True  # one kernel for all parameters on the GPU; the CPU path keeps the default foreach
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused,
        capturable=capturable,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):  # a CUDA-graph step reads its learning rate from this tensor
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


__all__ = ["SCHEDULES", "learning_rate", "build_optimizer", "set_learning_rate"]
