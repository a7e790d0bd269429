"""The decay-parameterization interface shared by every kind in ``DECAY_KINDS``.

A kind maps the layer input x ``[B, T, d]`` to a log decay (``log lambda <= 0``, fp32, or fp64 for fp64 inputs):

    scalar: log_decay [B, T, H]        vector: log_decay [B, T, H, C]   (C = decay channels per head)

and, when ``share=True``, also to the key (the key is then a function of the decay, and the layer builds no key
projection), and, for the stateful kinds (lightnet, lssp), to a carried state so that decoding token by token
continues the sequence exactly. The attention layer only calls ``forward``; it never looks at a kind's name.

Projections (all bias-free, initialized by the model):
    not shared, vector: x -> Linear(d, r) -> Linear(r, H*C)   (low rank, r = head dim by default)
    not shared, scalar: x -> Linear(d, H)
    shared:             x -> Linear(d, H*C)                    (this *is* the key projection)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from decaylab.registry import Registry

DECAY_KINDS: Registry = Registry("decay kind")


class DecayOutput(NamedTuple):
    log_decay: torch.Tensor
    """``[B, T, H]`` or ``[B, T, H, C]``, <= 0, fp32 (fp64 for fp64 inputs)."""
    key: torch.Tensor | None = None
    """``[B, T, H, C]`` key derived from the decay (shared mode only), in the decay's dtype."""
    state: torch.Tensor | None = None
    """Carried state of stateful kinds after the last token (None for the others)."""


@dataclasses.dataclass(frozen=True)
class DecayDims:
    """Sizes a decay module needs from its layer."""

    d_model: int
    n_heads: int
    channels: int
    """Decay channels per head for vector decay: the head dim, or half of it when RoPE ties rotated pairs."""
    layer_idx: int
    n_layers: int


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Decays are computed in fp32 at least (fp64 stays fp64 so exactness tests can be tight)."""
    return torch.promote_types(x.dtype, torch.float32)


class DecayParam(nn.Module):
    """Base class of every decay kind; subclasses set the flags and implement ``forward``."""

    supports_scalar: bool = True
    supports_vector: bool = True
    supports_share: bool = True
    supports_lower_bound: bool = False
    default_lower_bound: bool = False
    stateful: bool = False
    data_dependent: bool = True
    options: tuple[str, ...] = ()
    """DecayConfig fields (besides the common ones) this kind reads, e.g. ``("p",)``."""
    label: str = ""
    """Display name in tables and plots (the paper's name where it has one)."""

    def __init__(self, cfg, dims: DecayDims):
        super().__init__()
        self.cfg = cfg
        self.dims = dims
        self.scalar = cfg.granularity == "scalar"
        self.share = cfg.share
        H, C, d = dims.n_heads, dims.channels, dims.d_model
        self.shape: tuple[int, ...] = (H,) if self.scalar else (H, C)
        self.key_proj = self.proj = None
        if self.data_dependent and self.share:
            self.key_proj = nn.Linear(d, H * C, bias=False)
        elif self.data_dependent and self.scalar:
            self.proj = nn.Linear(d, H, bias=False)
        elif self.data_dependent:
            rank = cfg.rank or C
            self.proj = nn.Sequential(nn.Linear(d, rank, bias=False), nn.Linear(rank, H * C, bias=False))

    def decay_parameter(self, init: torch.Tensor) -> nn.Parameter:
        """A learnable decay parameter, tagged so that AdamW groups leave it out of weight decay."""
        p = nn.Parameter(init)
        p._no_weight_decay = True
        return p

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """The projection output in the decay dtype, ``[B, T, *shape]``."""
        layer = self.key_proj if self.share else self.proj
        z = layer(x).to(compute_dtype(x))
        return z.view(*x.shape[:-1], *self.shape)

    def reset_parameters(self) -> None:
        """(Re)initialize the kind's own parameters; projections are initialized by the model."""

    def forward(self, x: torch.Tensor, *, lower_bound: torch.Tensor | None = None, state=None) -> DecayOutput:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"granularity={self.cfg.granularity}, share={self.share}, shape={self.shape}"


def one_minus_decay(log_decay: torch.Tensor) -> torch.Tensor:
    """1 - lambda computed accurately from log lambda (the HGRN-style tied key)."""
    return -torch.expm1(log_decay)
