"""Learning-rate schedules as pure functions of the step.

A schedule maps the optimizer step ``s`` (0-based: the step about to be taken) to a multiplier of
``train.lr``. Every schedule starts with a linear warmup, lr(s) = lr * (s + 1) / W for s < W, then:

    constant  lr(s) = lr
    cosine    lr(s) = lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2,   p = (s - W) / (S - W)
    wsd       warmup-stable-decay: lr until the last ``wsd_decay_fraction * S`` steps, then linear to lr_min

with lr_min = ``min_lr_ratio * lr`` and S = ``max_steps``. Being pure functions of the step, the schedules
need no state of their own: a resumed run only has to know which step it is at. They sit beside the run
configuration, which checks ``train.schedule`` against them.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

from decaylab.registry import Registry


class ScheduleSettings(Protocol):
    """The settings a schedule reads (a TrainConfig has them all)."""

    lr: float
    max_steps: int
    warmup_steps: int
    min_lr_ratio: float
    wsd_decay_fraction: float
    schedule: str

# name -> f(step, train_config) -> multiplier in [min_lr_ratio, 1] after warmup
SCHEDULES: Registry[Callable[[int, ScheduleSettings], float]] = Registry("learning-rate schedule")


def _warmup(step: int, cfg: ScheduleSettings) -> float | None:
    """The warmup multiplier, or None once warmup is over."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return None


@SCHEDULES.register("constant")
def constant_schedule(step: int, cfg: ScheduleSettings) -> float:
    warm = _warmup(step, cfg)
    return 1.0 if warm is None else warm


@SCHEDULES.register("cosine")
def cosine_schedule(step: int, cfg: ScheduleSettings) -> float:
    warm = _warmup(step, cfg)
    if warm is not None:
        return warm
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("wsd")
def wsd_schedule(step: int, cfg: ScheduleSettings) -> float:
    warm = _warmup(step, cfg)
    if warm is not None:
        return warm
    decay_steps = max(1, round(cfg.wsd_decay_fraction * cfg.max_steps))
    decay_start = cfg.max_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / decay_steps)
    return 1.0 - (1.0 - cfg.min_lr_ratio) * progress


def learning_rate(step: int, cfg: ScheduleSettings) -> float:
    """The learning rate for optimizer step ``step`` (0-based)."""
    return cfg.lr * SCHEDULES.get(cfg.schedule)(step, cfg)


__all__ = ["SCHEDULES", "learning_rate"]
