"""Positional encodings of q and k as functional ops: a torch reference and one-launch Triton kernels, one signature.

Both ops take q and k ``[B, T, H, K]`` (strided views allowed) and the cos and sin tables of their positions, in
float32 (float64 for float64 inputs): ``[T, 1, W]`` for positions shared by every row, ``[B, T, 1, W]`` for a
per-row offset. They compute in the tables' dtype and return q and k in their own dtypes.

* ``rope(q, k, cos, sin)``, W = K, in the rotate-half layout: cos = [cos t theta, cos t theta] and
  sin = [-sin t theta, sin t theta], so that y = x * cos + [x2, x1] * sin rotates the pair (x_i, x_{i+K/2}).
  Output width K.
* ``lrpe(q, k, cos, sin)``, W = K: y = [x * cos, x * sin]. Output width 2K.

On CUDA (and shared positions, float16/bfloat16/float32 inputs of one shape) both run on Triton kernels that encode
q and k in one launch forward and one backward (:mod:`decaylab.ops.triton.positional`); everywhere else on the torch
code below. The kernels compute the same float32 products and sums as the torch code, unfused, so both paths give
the same bits. ``use_kernels`` switches the kernels off (to compare the paths) or on wherever they can run.
"""

from __future__ import annotations

import torch

from decaylab.ops.replicas import fold_rows
from decaylab.ops.switch import DeviceSwitch

try:
    from decaylab.ops.triton import positional as _triton
except ImportError:  # no triton: the torch code everywhere
    _triton = None

_switch = DeviceSwitch()  # the kernels on CUDA tensors unless use_kernels says otherwise


def rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary encoding of one ``[B, T, H, K]`` tensor (tables in the rotate-half layout above)."""
    y = x.to(cos.dtype)
    y1, y2 = y.chunk(2, dim=-1)
    # one multiply by the full-width tables instead of four by the half-width ones: fewer, larger operations (faster
    # on CPU) and the same bits, since x1 c + x2 (-s) rounds exactly as x1 c - x2 s
    return (y * cos + torch.cat([y2, y1], dim=-1) * sin).to(x.dtype)


def lrpe_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Cosine encoding of one ``[B, T, H, K]`` tensor: ``[x * cos, x * sin]``, ``[B, T, H, 2K]``."""
    # (a broadcast multiply by a stacked (cos, sin) table is not used: slower on CPU for forward and backward)
    y = x.to(cos.dtype)
    return torch.cat([y * cos, y * sin], dim=-1).to(x.dtype)


def use_kernels(enabled: bool | None):
    """Within the context: ``False`` runs the torch code everywhere (the eager path, for comparisons), ``True`` the
    Triton kernels wherever triton runs (CUDA, or CPU tensors under TRITON_INTERPRET=1), ``None`` the default (the
    kernels on CUDA tensors)."""
    return _switch.forced(enabled)


def _fused(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor) -> bool:
    """Whether the kernels take these inputs: shared positions, one shape, a kernel dtype, on a device they run on."""
    return (_switch.on(q.device) and _triton is not None and cos.ndim == 3 and cos.dtype == torch.float32 and q.shape == k.shape
            and q.ndim == 4 and q.dtype in _triton.KERNEL_DTYPES and k.dtype in _triton.KERNEL_DTYPES)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary encoding of q and k; tables ``[T, 1, K]`` or ``[B, T, 1, K]`` in the rotate-half layout."""
    if _fused(q, k, cos):  # replicated models (vmap): all replicas' rows in one launch
        return fold_rows(_triton.rope, (q, k, cos, sin), (True, True, False, False))
    return rope_reference(q, cos, sin), rope_reference(k, cos, sin)


def lrpe(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine encoding of q and k to ``[B, T, H, 2K]``; tables ``[T, 1, K]`` or ``[B, T, 1, K]``."""
    if _fused(q, k, cos):  # replicated models (vmap): all replicas' rows in one launch
        return fold_rows(_triton.lrpe, (q, k, cos, sin), (True, True, False, False))
    return lrpe_reference(q, cos, sin), lrpe_reference(k, cos, sin)


__all__ = ["lrpe", "lrpe_reference", "rope", "rope_reference", "use_kernels"]
