"""decaylab: decay in linear attention, from the kernel to the design-space study."""

__version__ = "0.1.0"

from decaylab.decay import DECAY_KINDS, DecayConfig  # noqa: E402
from decaylab.model import DecayLM, ModelConfig  # noqa: E402

__all__ = ["DECAY_KINDS", "DecayConfig", "DecayLM", "ModelConfig", "__version__"]
