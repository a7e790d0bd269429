"""Decays normalized by a running sum over time: LightNet and log-sum-softplus (lssp).

LightNet (a virtual first token with f = 0 starts the sum):
    Z_t = log(1 + sum_{s<=t} exp(f_s)) = logcumsumexp([0, f_1, ..., f_t])_t
    log lambda_t = Z_{t-1} - Z_t            (lambda_t = (1 + sum_{s<t} e^f) / (1 + sum_{s<=t} e^f) -> 1 over time)
    shared key: k_t = exp(f_t - Z_t) = 1 - lambda_t

lssp (softplus(0) = log 2 for the virtual first token):
    S_t = log 2 + sum_{s<=t} softplus(f_s)
    log lambda_t = log S_{t-1} - log S_t = -log1p(softplus(f_t) / S_{t-1})
    shared key: k_t = softplus(f_t) / S_t = 1 - lambda_t

Both carry their normalizer (Z_T or S_T, ``[B, *shape]``) as the decay state, so a sequence processed in pieces,
or token by token while decoding, gets exactly the decays of one pass over the whole sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from decaylab.decay.base import DECAY_KINDS, DecayOutput, DecayParam


@DECAY_KINDS.register("lightnet")
class LightNet(DecayParam):
    stateful = True
    label = "LightNet"

    def forward(self, x, *, lower_bound=None, state=None) -> DecayOutput:
        f = self.preactivation(x)  # [B, T, *shape]
        z0 = f.new_zeros(f.shape[0], *self.shape) if state is None else state.to(f.dtype)
        z = torch.logcumsumexp(torch.cat([z0.unsqueeze(1), f], dim=1), dim=1)  # [B, T+1, *shape]
        log_decay = (z[:, :-1] - z[:, 1:]).clamp(max=0.0)  # z is non-decreasing; clamp removes rounding only
        key = torch.exp(f - z[:, 1:]) if self.share else None
        return DecayOutput(log_decay, key, z[:, -1])


@DECAY_KINDS.register("lssp")
class LogSumSoftplus(DecayParam):
    stateful = True
    label = "LSSP"

    def forward(self, x, *, lower_bound=None, state=None) -> DecayOutput:
        f = self.preactivation(x)
        step = F.softplus(f)
        s0 = f.new_full((f.shape[0], *self.shape), math.log(2.0)) if state is None else state.to(f.dtype)
        s = torch.cat([s0.unsqueeze(1), s0.unsqueeze(1) + step.cumsum(dim=1)], dim=1)  # [B, T+1, *shape]
        log_decay = -torch.log1p(step / s[:, :-1])
        key = step / s[:, 1:] if self.share else None
        return DecayOutput(log_decay, key, s[:, -1])
