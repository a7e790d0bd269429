"""The language model: ModelConfig and presets, DecayLM (blocks, generation, checkpoints)."""

from decaylab.model.config import PRESETS, DecayConfig, ModelConfig
from decaylab.model.lm import Block, Cache, DecayLM

__all__ = ["ModelConfig", "DecayConfig", "PRESETS", "DecayLM", "Block", "Cache"]
