"""Decay parameterizations: one small class per kind, registered by public name in ``DECAY_KINDS``.

``build_decay(cfg, dims)`` makes the module a layer uses; every kind returns ``DecayOutput(log_decay, key, state)``.
"""

from __future__ import annotations

from decaylab.decay.base import DecayDims, DecayOutput, DecayParam, compute_dtype
from decaylab.decay.config import DecayConfig
from decaylab.decay.kinds import DECAY_KINDS


def build_decay(cfg: DecayConfig, dims: DecayDims) -> DecayParam:
    """The decay module of one layer."""
    return DECAY_KINDS.get(cfg.kind)(cfg, dims)


__all__ = ["DECAY_KINDS", "DecayConfig", "DecayDims", "DecayOutput", "DecayParam", "build_decay", "compute_dtype"]
