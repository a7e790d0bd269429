"""Layers: token mixers (decay linear attention, softmax baseline), norms, SwiGLU, positional encodings and the
short convolution."""

from decaylab.layers.base import MIXERS, MixerOutput
from decaylab.layers.ffn import SwiGLU
from decaylab.layers.kv_cache import KVCache, StaticKVCache
from decaylab.layers.linear_attention import DecayLinearAttention, LinearAttentionCache
from decaylab.layers.norms import GatedRMSNorm, RMSNorm
from decaylab.layers.positional import (
    POSITIONAL_ENCODINGS,
    CosineEncoding,
    PositionalEncoding,
    RotaryEncoding,
    TemporalPositionEncoding,
)
from decaylab.layers.short_conv import ShortConv
from decaylab.layers.softmax_attention import SoftmaxAttention

__all__ = [
    "MIXERS",
    "MixerOutput",
    "SwiGLU",
    "DecayLinearAttention",
    "LinearAttentionCache",
    "GatedRMSNorm",
    "RMSNorm",
    "POSITIONAL_ENCODINGS",
    "CosineEncoding",
    "PositionalEncoding",
    "RotaryEncoding",
    "TemporalPositionEncoding",
    "ShortConv",
    "SoftmaxAttention",
    "KVCache",
    "StaticKVCache",
]
