"""RMSNorm and the gated RMSNorm that closes the linear-attention mixer.

    RMSNorm(x)            = x / sqrt(mean(x^2) + eps) * w            (computed in fp32, weight-only, eps 1e-5)
    GatedRMSNorm(o, g)    = RMSNorm(o * sigmoid(g))                   (normalizes over the whole model width d)

On CUDA both run on the fused kernels of :func:`decaylab.ops.norm.rms_norm` (one launch forward, two backward,
instead of about 8 and 12 torch kernels); there the gated product o * sigmoid(g) is formed in fp32. Elsewhere (and
for inputs the kernels do not take) they run the torch code below, where the product is formed in the inputs'
dtype, as it always has been.
"""

from __future__ import annotations

import torch
from torch import nn

from decaylab.ops import norm


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # off the kernels, rms_norm runs its torch reference: this layer's formula, operation for operation
        return norm.rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """RMSNorm of ``o * sigmoid(gate)``: the output gate is applied before the normalization."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if norm.kernels_take(x, self.weight, gate):
            return norm.rms_norm(x, self.weight, self.eps, gate)
        # the torch code keeps its numerics: the product rounds to the inputs' dtype before the norm
        return super().forward(x * torch.sigmoid(gate))
