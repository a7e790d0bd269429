"""The sigmoid family: GLA, HGRN2 and Simple Decay, with HGRN2's optional learnable lower bound.

    gla (paper form):    log lambda = logsigmoid(z / 16)
    gla (original GLA):  log lambda = logsigmoid(z) / 16            (lambda = sigmoid(z)^(1/16), ~0.958 at init)
    hgrn2:               log lambda = logsigmoid(z)
    simple:              log lambda = logsigmoid(z + delta),  delta init logit(p): the median initial decay is p

Lower bound (per layer, owned by the model, see ``decaylab.model``): lambda = lb + (1 - lb) * lambda_raw, computed
in log space as logaddexp(log lb, log(1 - lb) + log lambda_raw). Layer 0 has lb = 0 identically and gets None.
Shared mode: the key is k = 1 - lambda (HGRN2's tied input gate), with or without the lower bound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from decaylab.decay.base import DECAY_KINDS, DecayOutput, DecayParam, one_minus_decay

GLA_DENOMINATOR = 16.0


class SigmoidDecay(DecayParam):
    supports_lower_bound = True

    def raw_log_decay(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x, *, lower_bound=None, state=None) -> DecayOutput:
        log_decay = self.raw_log_decay(self.preactivation(x))
        if lower_bound is not None:
            lb = lower_bound.to(log_decay.dtype)  # [*shape], strictly inside (0, 1)
            log_decay = torch.logaddexp(lb.log(), torch.log1p(-lb) + log_decay)
            log_decay = log_decay.clamp(max=0.0)  # rounding only: lb + (1 - lb) * lambda <= 1 exactly
        return DecayOutput(log_decay, one_minus_decay(log_decay) if self.share else None)


@DECAY_KINDS.register("gla")
class GLA(SigmoidDecay):
    """Gated linear attention's forget gate, in the paper's form or GLA's original form (``gla_form``)."""

    options = ("gla_form",)
    label = "GLA"

    def raw_log_decay(self, z):
        if self.cfg.gla_form == "original":
            return F.logsigmoid(z) / GLA_DENOMINATOR
        return F.logsigmoid(z / GLA_DENOMINATOR)


@DECAY_KINDS.register("hgrn2")
class HGRN2(SigmoidDecay):
    """HGRN2's forget gate; the per-layer lower bound is on by default."""

    default_lower_bound = True
    label = "HGRN2"

    def raw_log_decay(self, z):
        return F.logsigmoid(z)


@DECAY_KINDS.register("simple")
class SimpleDecay(SigmoidDecay):
    """Simple Decay SD-p: a learnable bias initialized so that the median initial decay is p."""

    options = ("p",)
    label = "Simple Decay"

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        self.bias = self.decay_parameter(torch.zeros(self.shape))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        p = self.cfg.p
        self.bias.fill_(math.log(p / (1.0 - p)))

    def raw_log_decay(self, z):
        return F.logsigmoid(z + self.bias.to(z.dtype))
