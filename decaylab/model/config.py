"""ModelConfig (with its nested DecayConfig) and the size presets.

``ModelConfig.from_preset("tiny", {"decay.kind": "gla", "pos": "rope"})`` builds a preset with dotted overrides
(``decaylab.config.with_overrides``); every combination is validated here, at construction time.

Presets are the files ``decaylab/presets/models/NAME.toml`` (``decaylab.presets``), each a table of fields with
its description (vocabulary 50,432 = a GPT-2 BPE padded to a multiple of 256 for the paper shapes):

    tiny    d 32,   2 layers,  2 heads, ffn 64,   vocab 256     tests
    small   d 256,  4 layers,  4 heads, ffn 768,  vocab 10,000  CPU study (~3.7M non-embedding params; PTB vocab)
    160m    d 768,  12 layers, 12 heads, ffn 2048               the paper's 160M  (164.8M with vector Mamba2)
    410m    d 1024, 24 layers, 16 heads, ffn 2816               the paper's 410M  (418.0M)
    1.45b   d 2048, 24 layers, 32 heads, ffn 5632               the paper's 1.45B (1452.5M)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from decaylab import presets
from decaylab.config import from_dict, with_overrides
from decaylab.decay import DecayConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int | None = None
    """Vocabulary size (embedding rows and LM-head outputs). None: a training run takes it from its data (the
    tokenizer); a model built on its own needs a number."""
    d_model: int = 768
    """Model width d."""
    n_layers: int = 12
    """Number of blocks L."""
    n_heads: int = 12
    """Attention heads H; the head dimension is d_model / n_heads (64 in the paper)."""
    ffn_dim: int = 2048
    """SwiGLU hidden width (about 8/3 d, rounded up to a multiple of 256 in the paper)."""
    mixer: Literal["linear", "softmax"] = "linear"
    """Token mixer: decay linear attention or the softmax-attention baseline (which ignores ``decay``)."""
    pos: Literal["none", "rope", "lrpe", "tpe"] = "none"
    """Positional encoding: none, rope (rotary on q/k), lrpe (the paper's cosine form), tpe (LightNet's TPE)."""
    decay: DecayConfig = dataclasses.field(default_factory=DecayConfig)
    """The decay design: kind, granularity, share, p, gla_form, lower_bound, rank."""
    dropout: float = 0.0
    """Dropout on the embedding output and on each residual branch."""
    tie_embeddings: bool = False
    """Score the vocabulary with the input embedding matrix (no separate LM head): fewer parameters, and the usual
    regularizer of small word-level models (Press & Wolf, 2017). The paper's models have an untied head."""
    gate_rank: int | None = None
    """Rank of the low-rank output gate d -> rank -> d. None: the head dimension."""
    short_conv: int = 0
    """Width of a causal depthwise convolution over time on the linear mixer's q, k and v projections (0: none, as
    in the paper; 4 in zoology's and Mamba2's). It hands each token its last few neighbours, which associative
    recall needs (``layers/short_conv.py``)."""
    rope_base: float = 10000.0
    """Base of the rotary / cosine position frequencies."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the truncated-normal init (cut at 3 std) of embeddings and linear layers."""

    def __post_init__(self) -> None:
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"vocab_size={self.vocab_size} must be a positive integer (or None: from the data)")
        for name in ("d_model", "n_layers", "n_heads", "ffn_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads} (head dim = d_model / n_heads)"
            )
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"pos='rope' needs an even head dimension; d_model / n_heads = {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.gate_rank is not None and self.gate_rank < 1:
            raise ValueError(f"gate_rank={self.gate_rank} must be a positive integer or None (head dimension)")
        if self.short_conv < 0 or self.short_conv == 1:
            raise ValueError(f"short_conv={self.short_conv} must be 0 (no convolution) or a width of 2 or more "
                             "tokens (e.g. 4)")
        if self.short_conv and self.mixer != "linear":
            raise ValueError(f"short_conv={self.short_conv} applies to the linear mixer only; set short_conv=0 for "
                             f"mixer={self.mixer!r}")
        if self.norm_eps <= 0 or self.init_std <= 0 or self.rope_base <= 1:
            raise ValueError("norm_eps and init_std must be > 0 and rope_base > 1")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_preset(cls, name: str, overrides: Mapping[str, Any] | None = None) -> "ModelConfig":
        """A preset with dotted-key overrides, e.g. ``from_preset("small", {"decay.kind": "gla"})``."""
        if name not in PRESETS:
            presets.path("models", name)  # raises: an unknown name is answered with the closest ones
        return with_overrides(from_dict(cls, PRESETS[name]), dict(overrides or {}))


def _model_presets() -> dict[str, dict[str, Any]]:
    tables = {name: presets.load("models", name) for name in presets.names("models")}
    return {name: {k: v for k, v in table.items() if k != "description"} for name, table in tables.items()}


PRESETS: dict[str, dict[str, Any]] = _model_presets()  # name -> fields, read from the preset files
PAPER_VOCAB = PRESETS["160m"]["vocab_size"]  # 50,432

__all__ = ["ModelConfig", "DecayConfig", "PRESETS", "PAPER_VOCAB"]
