"""decaylab: decay in linear attention, from the kernel to the design-space study."""

from __future__ import annotations

from typing import TYPE_CHECKING

from decaylab.lazy import lazy_exports

__version__ = "0.1.0"

# Public names resolve lazily (PEP 562) so that `import decaylab.registry` or the sweep workers' imports do not
# pay for torch and the model stack until something actually uses them.
_EXPORTS = {
    "DECAY_KINDS": "decaylab.decay",
    "DecayConfig": "decaylab.decay",
    "DecayLM": "decaylab.model",
    "ModelConfig": "decaylab.model",
    "decay_linear_attention": "decaylab.ops",
}

if TYPE_CHECKING:
    from decaylab.decay import DECAY_KINDS, DecayConfig
    from decaylab.model import DecayLM, ModelConfig
    from decaylab.ops import decay_linear_attention

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [*_EXPORTS, "__version__"]

# AutoConfig / AutoModelForCausalLM learn model_type "decaylab" once transformers loads them (nothing is imported now).
from decaylab.hf.registration import register_when_imported  # noqa: E402

register_when_imported()
