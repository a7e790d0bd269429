"""ShortConv: a causal depthwise convolution over time, of a few tokens, on the projected q, k and v.

    y_t[c] = sum_{i < W} w[c, i] * x_{t - W + 1 + i}[c]        (x before the first token: zero, or the cache's)

It lets every position mix in its last W - 1 tokens before the recurrence sees it. Associative recall needs a key to
be bound to the token after it; without a convolution a linear-attention model must first learn a layer that attends
to the previous token, which small models on MQAR often fail to find (the recall probes of zoology, Based and
Mamba2 all have one). Off (width 0) by default, as in the paper's models.

Its cache is the last W - 1 inputs ``[B, W - 1, C]``: a fixed size, so decoding token by token (and the in-place
decoding steps of ``model/decoding.py``) reproduce the parallel forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ShortConv(nn.Module):
    def __init__(self, channels: int, width: int):
        super().__init__()
        if width < 2:
            raise ValueError(f"a short convolution needs a width of 2 or more; got {width}")
        self.channels, self.width = channels, width
        self.weight = nn.Parameter(torch.empty(channels, 1, width))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # nn.Conv1d's default for a depthwise filter: uniform within 1 / sqrt(fan in), fan in = the width
        bound = 1.0 / math.sqrt(self.width)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y [B, T, C], new state [B, W - 1, C])`` of ``x [B, T, C]`` after ``state`` (zeros when None)."""
        B, T, C = x.shape
        if state is None:
            padded = F.pad(x, (0, 0, self.width - 1, 0))
        else:
            padded = torch.cat([state.to(x.dtype), x], dim=1)
        y = F.conv1d(padded.transpose(1, 2), self.weight.to(x.dtype), groups=C).transpose(1, 2)
        return y, padded[:, T:]  # the last W - 1 inputs, whatever T is


__all__ = ["ShortConv"]
