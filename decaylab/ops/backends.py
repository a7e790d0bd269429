"""The registry of ``decay_linear_attention`` backends, apart from ``decaylab.ops`` so that a backend module can
register itself without importing the package that imports it (``decaylab.ops`` loads the optional backends)."""

from __future__ import annotations

from decaylab.ops.reference.recurrent import recurrent_decay_linear_attention
from decaylab.registry import Registry

BACKENDS: Registry = Registry("backend")
BACKENDS.register("recurrent")(recurrent_decay_linear_attention)

__all__ = ["BACKENDS"]
