"""The gated FFN's activation as one functional op on the packed projection: a torch reference and Triton kernels.

    swiglu(gv) = silu(gv[..., :H]) * gv[..., H:]        gv [..., 2H]: the gate's H channels, then the value's

On CUDA (float16/bfloat16/float32) it runs on one kernel each way (:mod:`decaylab.ops.triton.swiglu`), computing
in float32 and rounding once; the torch code rounds ``silu(gate)`` and the product apart, so the two agree to
rounding, not bit for bit. ``use_kernels`` switches the kernels off (to compare) or on wherever triton runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decaylab.ops.replicas import fold_rows
from decaylab.ops.switch import DeviceSwitch

try:
    from decaylab.ops.triton import swiglu as _triton
except ImportError:  # no triton: the torch code everywhere
    _triton = None

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_switch = DeviceSwitch()  # the kernels on CUDA tensors unless use_kernels says otherwise


def swiglu_reference(gv: torch.Tensor) -> torch.Tensor:
    """The torch code: ``silu(gate) * value`` of the two halves of the last dim."""
    gate, value = gv.chunk(2, dim=-1)
    return F.silu(gate) * value


def use_kernels(enabled: bool | None):
    """Within the context: ``False`` the torch code everywhere, ``True`` the kernels wherever triton runs (CUDA,
    or CPU tensors under TRITON_INTERPRET=1), ``None`` the default (the kernels on CUDA tensors)."""
    return _switch.forced(enabled)


def kernels_take(gv: torch.Tensor) -> bool:
    """Whether ``swiglu`` runs ``gv`` on the kernels."""
    return (_triton is not None and _switch.on(gv.device) and gv.dtype in KERNEL_DTYPES and gv.ndim >= 1
            and gv.numel() > 0)  # fmt: skip


def swiglu(gv: torch.Tensor) -> torch.Tensor:
    """``silu(gv[..., :H]) * gv[..., H:]`` for ``gv [..., 2H]`` (H >= 1)."""
    if gv.ndim < 1 or gv.shape[-1] % 2:
        raise ValueError(f"swiglu takes [..., 2H] (the gate's H channels, then the value's); got {tuple(gv.shape)}")
    if kernels_take(gv):
        # rows are independent: replicated models' rows (under vmap) are just more rows
        return fold_rows(_triton.swiglu, (gv,), (True,))
    return swiglu_reference(gv)


__all__ = ["kernels_take", "swiglu", "swiglu_reference", "use_kernels"]
