"""TMA descriptors of the Gluon kernels' inputs and outputs, built on the host at each launch."""

from __future__ import annotations

import functools

import torch
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from decaylab.ops.triton.gluon.tiles import CHUNK, VALUE_BLOCK
from decaylab.ops.triton.gluon.language import gl





class CheckedDescriptor(TensorDescriptor):
    """A TensorDescriptor without its construction checks (~3 us of host time each, eight descriptors per forward
    and backward): gluon.suits has checked the alignment, and the functions below fix the blocks and the contiguous
    rows."""

    def __post_init__(self):
        pass


@functools.lru_cache(maxsize=None)
def _shared_layout(block: tuple[int, ...], bf16: bool):
    """The swizzled shared-memory layout of a tile (cached: otherwise rebuilt on every launch, at a cost in host
    time comparable to the launch's own)."""
    return gl.NVMMASharedLayout.get_default_for(list(block), gl.bfloat16 if bf16 else gl.float16)


def _descriptor(x: torch.Tensor, rows: int, columns: int, block: list[int]):
    """TMA descriptor of contiguous ``x`` seen as [rows, columns], copied in ``block`` tiles. Built from x's
    address, not from a reshaped view: a view of a tensor that autograd tracks costs host time on every call."""
    layout = _shared_layout(tuple(block), x.dtype == torch.bfloat16)
    return CheckedDescriptor(x, [rows, columns], [columns, 1], block, layout)


def tokens(x: torch.Tensor, columns: int):
    """A [B, T, H, D] tensor as [B * T, H * D] (a row per token), in tiles of CHUNK tokens and ``columns``."""
    B, T, H, D = x.shape
    return _descriptor(x, B * T, H * D, [CHUNK, columns])


def states(x: torch.Tensor):
    """A chunk-state buffer [C, H, K, V] as [C * H * K, V], in tiles of one [K, VALUE_BLOCK] state block."""
    C, H, K, V = x.shape
    return _descriptor(x, C * H * K, V, [K, VALUE_BLOCK])


def tiles(x: torch.Tensor):
    """A [B, T, H, D] tensor as [B * T, H * D], in [64, 64] tiles (64 tokens, 64 channels)."""
    B, T, H, D = x.shape
    return _descriptor(x, B * T, H * D, [CHUNK, CHUNK])


def state_tiles(x: torch.Tensor):
    """Per-chunk states [C, H, K, V] as [C * H * K, V], in [64, 64] tiles (64 keys, 64 values)."""
    C, H, K, V = x.shape
    return _descriptor(x, C * H * K, V, [CHUNK, CHUNK])
