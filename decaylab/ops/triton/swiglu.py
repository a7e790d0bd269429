"""The gated FFN's activation ``silu(gate) * value`` in one kernel each way, on the packed projection.

The FFN's two input projections run as one matmul (layers/projections.py) whose output ``[..., 2H]`` holds the
gate in its first H channels and the value in the last H. In torch the activation is a sigmoid-linear kernel and a
product forward, and backward the product's two gradients, the sigmoid-linear gradient and the concatenation of
the two halves' gradients for the matmul: five passes over ``[N, H]`` or ``[N, 2H]`` tensors, each read and
written. Here one program reads a tile of rows of both halves and writes ``h``; the backward reads the packed
input and ``dh`` and writes the packed gradient, which is the matmul's output gradient as it is:

    h = g * s * v                   s = sigmoid(g)
    dv = dh * g * s                 dg = dh * v * s * (1 + g * (1 - s))

computed in float32 and rounded once to the input's dtype (torch rounds ``silu(g)`` and the products apart).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # channels per program (a power of two)
ROWS = 4  # rows per program
NUM_WARPS = 4


@triton.jit
def _load_tile(gv, N, H, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """The program's [ROWS, BLOCK] tile: its offsets in gv [N, 2H] and in an [N, H] tensor, its mask, and the gate
    and value halves in float32."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = (rows < N)[:, None] & (cols < H)[None, :]
    at = rows.to(tl.int64)[:, None] * (2 * H) + cols[None, :]
    g = tl.load(gv + at, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(gv + at + H, mask=mask, other=0.0).to(tl.float32)
    return at, rows.to(tl.int64)[:, None] * H + cols[None, :], mask, g, v


@triton.jit
def swiglu_forward_kernel(gv, h, N, H, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Grid ``(cdiv(N, ROWS), cdiv(H, BLOCK))``: h[n, c] = silu(gv[n, c]) * gv[n, H + c] for its rows and channels."""
    at, out_at, mask, g, v = _load_tile(gv, N, H, BLOCK, ROWS)
    tl.store(h + out_at, (g * tl.sigmoid(g) * v).to(h.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_backward_kernel(gv, dh, dgv, N, H, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """Grid as the forward's: the packed gradient dgv = [dg | dv] of its rows and channels."""
    at, out_at, mask, g, v = _load_tile(gv, N, H, BLOCK, ROWS)
    d = tl.load(dh + out_at, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(g)
    tl.store(dgv + at, (d * v * s * (1.0 + g * (1.0 - s))).to(dgv.dtype.element_ty), mask=mask)
    tl.store(dgv + at + H, (d * g * s).to(dgv.dtype.element_ty), mask=mask)


def _grid(N: int, H: int) -> tuple[int, int]:
    return triton.cdiv(N, ROWS), triton.cdiv(H, BLOCK)


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gv):
        shape = gv.shape
        rows = gv.reshape(-1, shape[-1]).contiguous()
        N, H = rows.shape[0], shape[-1] // 2
        h = torch.empty((N, H), dtype=gv.dtype, device=gv.device)
        swiglu_forward_kernel[_grid(N, H)](rows, h, N, H, BLOCK=BLOCK, ROWS=ROWS, num_warps=NUM_WARPS)
        ctx.save_for_backward(rows)
        ctx.shape = shape
        return h.view(*shape[:-1], H)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh):
        (rows,) = ctx.saved_tensors
        N, H = rows.shape[0], rows.shape[1] // 2
        dgv = torch.empty_like(rows)
        swiglu_backward_kernel[_grid(N, H)](rows, dh.reshape(N, H).contiguous(), dgv, N, H, BLOCK=BLOCK, ROWS=ROWS,
                                            num_warps=NUM_WARPS)
        return dgv.view(ctx.shape)


def swiglu(gv: torch.Tensor) -> torch.Tensor:
    """``silu(gv[..., :H]) * gv[..., H:]`` for ``gv [..., 2H]``, in gv's dtype (see the module docstring)."""
    return SwiGLUFunction.apply(gv)


__all__ = ["SwiGLUFunction", "swiglu", "swiglu_backward_kernel", "swiglu_forward_kernel"]
