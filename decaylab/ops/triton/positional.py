"""RoPE and LRPE on q and k in one kernel launch forward and one backward.

In a small model each encoding in torch is a handful of elementwise kernels per tensor and direction (casts,
products with cos and sin, a concatenation), for q and for k, in every layer; in a step of many tiny kernels their
launches cost more than their arithmetic. Here one launch covers both tensors: programs on grid axis 2 pick q or k,
and each encodes a ``[BT, C]`` tile of one head (C = K/2 channel pairs for RoPE, K channels for LRPE), reading x in
its own dtype through its strides, computing in float32 with the angle tables and writing the input dtype.

Every variant reads one or two channel groups and writes one or two, C apart:

    rope forward    (a, b) -> (a c - b s, b c + a s)        rope backward: the same with -s (the inverse rotation)
    lrpe forward     a     -> (a c, a s)                    lrpe backward: (da, db) -> da c + db s

The kernels are compiled without fused multiply-adds, so each product and sum rounds as the torch code's
(:mod:`decaylab.ops.positional`) does: both paths give the same bits. Signatures as there.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from decaylab.ops.triton.configs import interpreter_active

TILE = 2048  # channel values per tile and channel group: 16 float32 registers a thread on 4 warps
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _encode_tile(x, y, cos, sin, sx_b, sx_t, sx_h, sy_b, sy_t, sy_h, s_angle, T, i_b, i_h, i_t,
                 C: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, ROTATE: tl.constexpr, BACKWARD: tl.constexpr):
    rows = i_t * BT + tl.arange(0, BT)
    cols = tl.arange(0, BC)
    mask = (rows < T)[:, None] & (cols < C)[None, :]
    x_at = x + i_b.to(tl.int64) * sx_b + i_h * sx_h + rows.to(tl.int64)[:, None] * sx_t + cols[None, :]
    y_at = y + i_b.to(tl.int64) * sy_b + i_h * sy_h + rows.to(tl.int64)[:, None] * sy_t + cols[None, :]
    angle = rows[:, None] * s_angle + cols[None, :]
    c = tl.load(cos + angle, mask=mask, other=0.0)
    s = tl.load(sin + angle, mask=mask, other=0.0)
    a = tl.load(x_at, mask=mask, other=0.0).to(tl.float32)
    if ROTATE:
        if BACKWARD:
            s = -s
        b = tl.load(x_at + C, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_at, (a * c - b * s).to(y.dtype.element_ty), mask=mask)
        tl.store(y_at + C, (b * c + a * s).to(y.dtype.element_ty), mask=mask)
    elif BACKWARD:
        b = tl.load(x_at + C, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_at, (a * c + b * s).to(y.dtype.element_ty), mask=mask)
    else:
        tl.store(y_at, (a * c).to(y.dtype.element_ty), mask=mask)
        tl.store(y_at + C, (a * s).to(y.dtype.element_ty), mask=mask)


@triton.jit
def positional_kernel(x0, y0, x1, y1, cos, sin, sx0_b, sx0_t, sx0_h, sy0_b, sy0_t, sy0_h, sx1_b, sx1_t, sx1_h,
                      sy1_b, sy1_t, sy1_h, s_angle, T, H: tl.constexpr, C: tl.constexpr, BT: tl.constexpr,
                      BC: tl.constexpr, ROTATE: tl.constexpr, BACKWARD: tl.constexpr):
    """Grid ``(B * H, cdiv(T, BT), tensors)``: program (bh, t, 0) encodes a tile of x0 into y0, (bh, t, 1) of x1."""
    i_bh = tl.program_id(0)
    i_t = tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    if tl.program_id(2) == 0:
        _encode_tile(x0, y0, cos, sin, sx0_b, sx0_t, sx0_h, sy0_b, sy0_t, sy0_h, s_angle, T, i_b, i_h, i_t, C, BT, BC,
                     ROTATE, BACKWARD)
    else:
        _encode_tile(x1, y1, cos, sin, sx1_b, sx1_t, sx1_h, sy1_b, sy1_t, sy1_h, s_angle, T, i_b, i_h, i_t, C, BT, BC,
                     ROTATE, BACKWARD)


def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """x itself when its channels are adjacent (any other strides are read as they are), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _launch(pairs: list[tuple[torch.Tensor, torch.Tensor]], cos: torch.Tensor, sin: torch.Tensor, C: int,
            rotate: bool, backward: bool) -> None:  # fmt: skip
    """One launch over the (input, output) pairs (one or two, of one [B, T, H, .] shape)."""
    (x0, y0), (x1, y1) = pairs[0], pairs[-1]  # one pair: the second grid slot is not launched
    B, T, H = x0.shape[:3]
    BC = triton.next_power_of_2(C)
    BT = max(1, TILE // BC)  # not from T: one compiled kernel for every length (prefill, decoding steps)
    strides = [*x0.stride()[:3], *y0.stride()[:3], *x1.stride()[:3], *y1.stride()[:3]]
    positional_kernel[(B * H, triton.cdiv(T, BT), len(pairs))](
        x0, y0, x1, y1, cos, sin, *strides, cos.stride(0), T, H=H, C=C, BT=BT, BC=BC, ROTATE=rotate,
        BACKWARD=backward, num_warps=4, enable_fp_fusion=False,  # unfused: the torch code's rounding, bit for bit
    )


class PositionalFunction(torch.autograd.Function):
    """q and k encoded together; ``rotate`` picks RoPE (width K) over LRPE (width 2K)."""

    @staticmethod
    def forward(ctx, q, k, cos, sin, rotate):
        K = q.shape[-1]
        C = K // 2 if rotate else K
        width = K if rotate else 2 * K
        qo = q.new_empty(*q.shape[:3], width)
        ko = k.new_empty(*k.shape[:3], width)
        # RoPE's second table half holds +sin and the kernels take s from it (the first holds -sin, for the torch code)
        _launch([(q, qo), (k, ko)], cos, sin[..., C:] if rotate else sin, C, rotate, backward=False)
        ctx.save_for_backward(cos, sin)
        ctx.rotate, ctx.C, ctx.K = rotate, C, K
        return qo, ko

    @staticmethod
    def backward(ctx, dqo, dko):
        cos, sin = ctx.saved_tensors
        rotate, C, K = ctx.rotate, ctx.C, ctx.K
        grads, pairs = [None, None], []
        # an unused output's gradient comes as zeros (materialized by autograd), so dy is never None here
        for i, dy in enumerate((dqo, dko)):
            if ctx.needs_input_grad[i]:
                dy = _unit_stride(dy)
                grads[i] = dy.new_empty(*dy.shape[:3], K)
                pairs.append((dy, grads[i]))
        if pairs:
            _launch(pairs, cos, sin[..., C:] if rotate else sin, C, rotate, backward=True)
        return grads[0], grads[1], None, None, None


def _check(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    if q.ndim != 4 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [B, T, H, K] of one shape; got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.dtype not in KERNEL_DTYPES or k.dtype not in KERNEL_DTYPES:
        raise ValueError(f"q and k must be float16, bfloat16 or float32 (got {q.dtype}, {k.dtype}); "
                         f"decaylab.ops.positional runs other dtypes on torch")
    T, K = q.shape[1], q.shape[3]
    for name, table in (("cos", cos), ("sin", sin)):
        if table.shape != (T, 1, K) or table.dtype != torch.float32 or table.stride(-1) != 1 \
                or table.stride(0) != cos.stride(0) or table.device != q.device:
            raise ValueError(f"{name} must be a float32 [T, 1, K] = [{T}, 1, {K}] table on {q.device} with adjacent "
                             f"channels, strided like cos; got {tuple(table.shape)} {table.dtype} on {table.device} "
                             f"(a per-row [B, T, 1, K] table runs on the torch code of decaylab.ops.positional)")
    if q.device.type != "cuda" and not interpreter_active():
        raise ValueError(f"the positional kernels run on CUDA tensors (got {q.device}); use decaylab.ops.positional "
                         f"on CPU, or set TRITON_INTERPRET=1 before importing triton to simulate the kernels")


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary encoding of q and k ``[B, T, H, K]`` (K even); cos, sin ``[T, 1, K]`` float32, rotate-half layout."""
    _check(q, k, cos, sin)
    if q.shape[-1] % 2:
        raise ValueError(f"rope needs an even head dimension; got K = {q.shape[-1]}")
    return PositionalFunction.apply(_unit_stride(q), _unit_stride(k), cos, sin, True)


def lrpe(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine encoding of q and k ``[B, T, H, K]`` to ``[B, T, H, 2K]``; cos, sin ``[T, 1, K]`` float32."""
    _check(q, k, cos, sin)
    return PositionalFunction.apply(_unit_stride(q), _unit_stride(k), cos, sin, False)


__all__ = ["KERNEL_DTYPES", "PositionalFunction", "lrpe", "positional_kernel", "rope"]
