"""``DECAY_KINDS`` with every kind registered: importing the kind modules registers them, in this order (the order
of ``DECAY_KINDS.names()``). ``DecayConfig`` validates against this table."""

from __future__ import annotations

from decaylab.decay.base import DECAY_KINDS

from decaylab.decay import mamba  # noqa: F401  isort: skip
from decaylab.decay import sigmoid  # noqa: F401  isort: skip
from decaylab.decay import cumulative  # noqa: F401  isort: skip
from decaylab.decay import fixed  # noqa: F401  isort: skip

__all__ = ["DECAY_KINDS"]
