"""RMSNorm and gated RMSNorm as one functional op: a torch reference and fused Triton kernels, one signature.

    rms_norm(x, w, eps)          = x / sqrt(mean(x^2) + eps) * w        over the last dim of x [..., D], w [D]
    rms_norm(x, w, eps, gate)    = rms_norm(x * sigmoid(gate), w, eps)  gate of x's shape

Both compute in float32 (float64 for float64 inputs), whatever the weight's dtype, and return x's dtype (with a
gate, the promotion of x's and gate's). The gated form multiplies x by sigmoid(gate) in that compute dtype: for
bfloat16 and float16 inputs the product is not rounded to the input dtype before the norm (the layer's torch code,
:class:`decaylab.layers.norms.GatedRMSNorm` on CPU, rounds it, as the norm has always done there).

On CUDA (float16/bfloat16/float32 tensors, D <= 8192) the op runs on Triton kernels, one launch forward and
two backward (:mod:`decaylab.ops.triton.norm`); everywhere else on the torch code below. The kernels sum the squares
in another order than torch, so the two paths agree to rounding, not bit for bit. ``use_kernels`` switches the
kernels off (to compare the paths) or on wherever they can run.
"""

from __future__ import annotations

import torch

from decaylab.ops.replicas import fold_rows, under_vmap
from decaylab.ops.switch import DeviceSwitch

try:
    from decaylab.ops.triton import norm as _triton
except ImportError:  # no triton: the torch code everywhere
    _triton = None

_switch = DeviceSwitch()  # the kernels on CUDA tensors unless use_kernels says otherwise


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float,
                       gate: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The torch code: RMSNorm over the last dim of x (of x * sigmoid(gate), the product in the compute dtype)."""
    out_dtype = x.dtype if gate is None else torch.promote_types(x.dtype, gate.dtype)
    dtype = torch.promote_types(out_dtype, torch.float32)
    y = x.to(dtype)
    if gate is not None:
        y = y * torch.sigmoid(gate.to(dtype))
    y = y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * weight.to(dtype)).to(out_dtype)


def use_kernels(enabled: bool | None):
    """Within the context: ``False`` runs the torch code everywhere (the eager path, for comparisons), ``True`` the
    Triton kernels wherever triton runs (CUDA, or CPU tensors under TRITON_INTERPRET=1), ``None`` the default (the
    kernels on CUDA tensors)."""
    return _switch.forced(enabled)


def kernels_take(x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor | None = None) -> bool:
    """Whether ``rms_norm`` runs these inputs on the kernels: a kernel dtype and shape, on a device they run on."""
    if not _switch.on(x.device) or _triton is None:
        return False
    dtypes = _triton.KERNEL_DTYPES
    return (x.ndim >= 1 and 1 <= x.shape[-1] <= _triton.MAX_DIM and x.numel() > 0 and x.dtype in dtypes
            and weight.dtype in dtypes and weight.shape == x.shape[-1:] and weight.device == x.device
            and (gate is None or (gate.shape == x.shape and gate.dtype in dtypes and gate.device == x.device)))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm over the last dim of x ``[..., D]``, weight ``[D]``; with a gate of x's shape, of x * sigmoid(gate)."""
    if kernels_take(x, weight, gate):
        if under_vmap(weight):  # replicated models, a weight each: one launch, each replica's rows by its own
            return _FoldNormRows.apply(x, weight, gate, float(eps))
        # a weight shared by the replicas (or none at all): their rows are just more rows
        return fold_rows(lambda x, gate: _triton.rms_norm(x, weight, eps, gate), (x, gate), (True, True))
    return rms_norm_reference(x, weight, eps, gate)


class _FoldNormRows(torch.autograd.Function):
    """The kernels under vmap with a weight per replica: the replicas' rows folded into one call that weighs each
    replica's block of rows by its own weight row (``[R, D]``). Only its vmap rule runs (see decaylab.ops.replicas)."""

    @staticmethod
    def forward(x, weight, gate, eps):
        raise RuntimeError("_FoldNormRows runs only under torch.func.vmap")

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, dy):
        raise RuntimeError("_FoldNormRows has no backward of its own: the kernels' autograd Function runs instead")

    @staticmethod
    def vmap(info, in_dims, x, weight, gate, eps):
        R = info.batch_size

        def replica_major(t, dim):  # [R, ...]: the kernels flatten the leading dims, so each replica's rows adjoin
            if t is None:
                return None
            return t.movedim(dim, 0) if dim is not None else t.expand(R, *t.shape)

        x_dim, w_dim, g_dim = in_dims[:3]
        y = _triton.rms_norm(replica_major(x, x_dim), weight.movedim(w_dim, 0), eps, replica_major(gate, g_dim))
        return y, 0


__all__ = ["kernels_take", "rms_norm", "rms_norm_reference", "use_kernels"]
