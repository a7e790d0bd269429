"""SwiGLU feed-forward block: w3(silu(w1 x) * w2 x), bias-free."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from decaylab.layers.projections import project, project_stacked, stacks
from decaylab.ops.swiglu import swiglu


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)  # gate branch
        self.w2 = nn.Linear(d_model, hidden, bias=False)  # value branch
        self.w3 = nn.Linear(hidden, d_model, bias=False)  # output (zero-initialized by the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if stacks(x, self.w1, self.w2):  # one matmul on CUDA (layers/projections.py), one activation kernel
            return self.w3(swiglu(project_stacked(x, self.w1, self.w2)))
        gate, value = project(x, self.w1, self.w2)
        return self.w3(F.silu(gate) * value)
