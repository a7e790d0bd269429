"""RMSNorm and the gated RMSNorm that closes the linear-attention mixer.

    RMSNorm(x)            = x / sqrt(mean(x^2) + eps) * w            (computed in fp32, weight-only, eps 1e-5)
    GatedRMSNorm(o, g)    = RMSNorm(o * sigmoid(g))                   (normalizes over the whole model width d)
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        y = x.to(dtype)
        y = y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (y * self.weight.to(dtype)).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """RMSNorm of ``o * sigmoid(gate)``: the output gate is applied before the normalization."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x * torch.sigmoid(gate))
