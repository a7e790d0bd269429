"""The AdamW weight-decay groups (the schedules: tests/run/test_run_schedules.py)."""

from __future__ import annotations

import torch

from decaylab.run.config import TrainConfig
from decaylab.training.optim import build_optimizer


class _TwoGroupModel(torch.nn.Module):
    """The param_groups contract of DecayLM: matrices decayed, the rest not unless decay_everything."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(4, 4, bias=False)
        self.norm = torch.nn.Parameter(torch.ones(4))

    def param_groups(self, weight_decay, decay_everything):
        if decay_everything:
            return [{"params": [self.w.weight, self.norm], "weight_decay": weight_decay}]
        return [
            {"params": [self.w.weight], "weight_decay": weight_decay},
            {"params": [self.norm], "weight_decay": 0.0},
            {"params": [], "weight_decay": 0.0},
        ]


def test_optimizer_uses_betas_and_groups():
    cfg = TrainConfig(weight_decay=0.1, lr=1e-3)
    opt = build_optimizer(_TwoGroupModel(), cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # the empty group is dropped
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    opt = build_optimizer(_TwoGroupModel(), TrainConfig(decay_everything=True))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1]
