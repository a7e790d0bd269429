"""Mamba2's decay and its ablations (A per channel for vector decay, per head for scalar decay).

    dt_t = softplus(z_t + dt_bias)          z_t = decay projection of x_t (the key projection when shared)
    log lambda_t = -A * dt_t                A = exp(log_A)

Ablations: ``mamba2_no_a`` (A = 1), ``mamba2_no_dt`` (no dt_bias: dt_t = softplus(z_t)), ``mamba2_no_a_no_dt``.
Shared mode: the key is the step size itself, k_t = dt_t (Mamba2's dt * B input scaling); defined for every
ablation because dt_t is.

Init (Mamba2): A ~ U(1, 16) stored as log A; dt = exp(U(log 1e-3, log 1e-1)) clamped >= 1e-4, stored as
dt_bias = softplus^{-1}(dt) = dt + log(-expm1(-dt)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from decaylab.decay.base import DECAY_KINDS, DecayOutput, DecayParam

A_RANGE = (1.0, 16.0)
DT_RANGE = (1e-3, 1e-1)
DT_FLOOR = 1e-4


class Mamba2Decay(DecayParam):
    use_a: bool = True
    use_dt_bias: bool = True

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        self.log_A = self.decay_parameter(torch.zeros(self.shape)) if self.use_a else None
        self.dt_bias = self.decay_parameter(torch.zeros(self.shape)) if self.use_dt_bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.log_A is not None:
            self.log_A.copy_(torch.empty(self.shape, device=self.log_A.device).uniform_(*A_RANGE).log())
        if self.dt_bias is not None:
            lo, hi = math.log(DT_RANGE[0]), math.log(DT_RANGE[1])
            dt = torch.empty(self.shape, device=self.dt_bias.device).uniform_(lo, hi).exp().clamp(min=DT_FLOOR)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x, *, lower_bound=None, state=None) -> DecayOutput:
        z = self.preactivation(x)
        if self.dt_bias is not None:
            z = z + self.dt_bias.to(z.dtype)
        dt = F.softplus(z)
        log_decay = -dt if self.log_A is None else -self.log_A.to(z.dtype).exp() * dt
        return DecayOutput(log_decay, dt if self.share else None)


@DECAY_KINDS.register("mamba2")
class Mamba2(Mamba2Decay):
    """log lambda = -A * softplus(z + dt_bias)."""

    label = "Mamba2"


@DECAY_KINDS.register("mamba2_no_a")
class Mamba2NoA(Mamba2Decay):
    """log lambda = -softplus(z + dt_bias)  (A = 1)."""

    label = "Mamba2 W/O A"

    use_a = False


@DECAY_KINDS.register("mamba2_no_dt")
class Mamba2NoDt(Mamba2Decay):
    """log lambda = -A * softplus(z)  (no dt bias, hence no dt-range init)."""

    label = "Mamba2 W/O Δ"

    use_dt_bias = False


@DECAY_KINDS.register("mamba2_no_a_no_dt")
class Mamba2NoANoDt(Mamba2Decay):
    """log lambda = -softplus(z)."""

    label = "Mamba2 W/O A & Δ"

    use_a = False
    use_dt_bias = False
