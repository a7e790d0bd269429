"""DecayLabConfig: the transformers config of a decaylab model (``model_type = "decaylab"``).

The whole ``ModelConfig`` travels as one nested dict, ``decaylab``, checked by ModelConfig itself when the config is
built; the names that transformers tools read (``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
``num_attention_heads``) are derived from it, so the two can never disagree. Importing this module registers the
class with ``AutoConfig``.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from decaylab.config import from_dict, to_dict
from decaylab.model.config import ModelConfig


class DecayLabConfig(PreTrainedConfig):
    model_type = "decaylab"

    decaylab: dict[str, Any] | None = None
    """The full decaylab ModelConfig as a dict (``decaylab.config.to_dict``); None: ModelConfig's defaults."""
    vocab_size: int | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        cfg = self.model_config()
        self.decaylab = to_dict(cfg)  # normalized: every field present, so config.json is self-describing
        self.vocab_size, self.hidden_size = cfg.vocab_size, cfg.d_model
        self.num_hidden_layers, self.num_attention_heads = cfg.n_layers, cfg.n_heads
        self.tie_word_embeddings = False  # decaylab's LM head is untied
        super().__post_init__(**kwargs)

    def model_config(self) -> ModelConfig:
        """The decaylab ModelConfig (raises ValueError naming the bad field if the dict is not a valid model)."""
        return from_dict(ModelConfig, dict(self.decaylab or {}))

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs: Any) -> "DecayLabConfig":
        return cls(decaylab=to_dict(cfg), **kwargs)


AutoConfig.register(DecayLabConfig.model_type, DecayLabConfig, exist_ok=True)  # defining the class registers it
