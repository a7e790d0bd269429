"""Decay parameterizations: one small class per kind, registered by public name in ``DECAY_KINDS``.

``build_decay(cfg, dims)`` makes the module a layer uses; every kind returns ``DecayOutput(log_decay, key, state)``.
"""

from __future__ import annotations

from decaylab.decay.base import DECAY_KINDS, DecayDims, DecayOutput, DecayParam, compute_dtype
# Importing the kind modules registers them; this order is the order of DECAY_KINDS.names().
from decaylab.decay import mamba  # noqa: F401  isort: skip
from decaylab.decay import sigmoid  # noqa: F401  isort: skip
from decaylab.decay import cumulative  # noqa: F401  isort: skip
from decaylab.decay import fixed  # noqa: F401  isort: skip
from decaylab.decay.config import DecayConfig


def build_decay(cfg: DecayConfig, dims: DecayDims) -> DecayParam:
    """The decay module of one layer."""
    return DECAY_KINDS.get(cfg.kind)(cfg, dims)


__all__ = ["DECAY_KINDS", "DecayConfig", "DecayDims", "DecayOutput", "DecayParam", "build_decay", "compute_dtype"]
