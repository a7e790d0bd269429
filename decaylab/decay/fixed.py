"""Data-independent per-head decays (scalar only, no projection, cannot be shared).

    tnl:     log lambda_{h,l} = -(1 / n_h) * (1 - l / (L - 1) + 1e-5),  n_h = 2 * 128^(h / (H - 1))
             (a geometric grid from 2 to 256 over heads; layer l = 0 .. L-1, so the decay rises to ~1 with depth)
    tnl_l:   the same values as a learnable per-head parameter (init from TNL's slopes for this layer),
             used as min(param, 0) so the decay never exceeds 1
    retnet:  lambda_h = 1 - 2^(-5 - h)
    none:    lambda = 1 (plain linear attention)
"""

from __future__ import annotations

import math

import torch

from decaylab.decay.base import DECAY_KINDS, DecayOutput, DecayParam, compute_dtype

TNL_SLOPE_RANGE = (2.0, 256.0)
TNL_EPS = 1e-5


def tnl_log_decay(n_heads: int, layer_idx: int, n_layers: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """TNL's fixed per-head log decays for one layer, ``[H]``."""
    h = torch.arange(n_heads, dtype=dtype, device=device)
    lo, hi = math.log(TNL_SLOPE_RANGE[0]), math.log(TNL_SLOPE_RANGE[1])
    n = torch.exp(lo + (hi - lo) * h / max(n_heads - 1, 1))
    depth = layer_idx / max(n_layers - 1, 1)
    return -(1.0 / n) * (1.0 - depth + TNL_EPS)


class FixedDecay(DecayParam):
    supports_vector = False
    supports_share = False
    data_dependent = False

    def per_head(self, dtype, device) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x, *, lower_bound=None, state=None) -> DecayOutput:
        B, T = x.shape[:2]
        log_decay = self.per_head(compute_dtype(x), x.device)  # [H]
        return DecayOutput(log_decay.expand(B, T, self.dims.n_heads))


@DECAY_KINDS.register("tnl")
class TNL(FixedDecay):
    label = "TNL"

    def per_head(self, dtype, device):
        return tnl_log_decay(self.dims.n_heads, self.dims.layer_idx, self.dims.n_layers, dtype, device)


@DECAY_KINDS.register("tnl_l")
class TNLLearnable(FixedDecay):
    label = "TNL-L"

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        self.log_decay = self.decay_parameter(torch.zeros(self.shape))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        d = self.dims
        self.log_decay.copy_(tnl_log_decay(d.n_heads, d.layer_idx, d.n_layers, device=self.log_decay.device))

    def per_head(self, dtype, device):
        return self.log_decay.to(dtype).clamp(max=0.0)


@DECAY_KINDS.register("retnet")
class RetNet(FixedDecay):
    label = "RetNet"

    def per_head(self, dtype, device):
        h = torch.arange(self.dims.n_heads, dtype=dtype, device=device)
        return torch.log1p(-torch.exp2(-5.0 - h))


@DECAY_KINDS.register("none")
class NoDecay(FixedDecay):
    label = "No decay"

    def per_head(self, dtype, device):
        return torch.zeros(self.dims.n_heads, dtype=dtype, device=device)
