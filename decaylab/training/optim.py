"""AdamW with weight-decay groups, and the learning rate set on it each step (schedules: decaylab.run.schedules)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from decaylab.run.config import TrainConfig


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


__all__ = ["build_optimizer", "set_learning_rate"]
