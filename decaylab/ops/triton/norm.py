"""RMSNorm and gated RMSNorm in one kernel launch forward and two backward (the kernel, then a sum for the weight).

In torch each norm is about 8 elementwise and reduction kernels forward and 12 backward (casts, square, mean,
rsqrt, products, their gradients); in a small model's step of many tiny kernels their launches cost more than their
arithmetic. Here a program normalizes a ``[ROWS, D]`` tile of rows (any leading dims flattened, channels adjacent),
reading each tensor in its own dtype, computing in float32 and writing the output dtype:

    u = x                 (plain)          u = x * sigmoid(gate)   (gated, the product in float32)
    rstd = 1 / sqrt(mean(u^2) + eps)        y = u * rstd * w

The forward saves rstd per row; the backward reloads x (and gate), recomputes u and n = u * rstd, and with
dn = dy * w forms

    du = rstd * (dn - n * mean(dn * n))     dx = du (plain)   dx = du * s, dgate = du * u * (1 - s)  (s = sigmoid(g))
    dw = sum over rows of dy * n

Each backward program loops over row tiles, keeping its share of dw in registers, and writes one float32 row of
partial sums; one ``sum`` over those rows gives dw. Signatures as in :mod:`decaylab.ops.norm`.

Replicas (several runs' models in one call, :mod:`decaylab.ops.replicas`): a weight ``[R, D]`` normalizes R equal,
adjacent blocks of rows, one weight each; the backward's programs then split per block, and dw is ``[R, D]``.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from decaylab.ops.triton.configs import interpreter_active

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_DIM = 8192  # the widest feature dim in one block: 16 float32 values a thread per tile tensor on 16 warps
TILE = 2048  # values per program tile: ROWS = TILE // BLOCK_D rows of narrow norms, one row of wide ones
PROGRAMS_PER_SM = 4  # backward programs per SM: each loops over row tiles, so partial dw rows stay few
INTERPRETER_PROGRAMS = 3  # under the interpreter: few programs, each looping over several tiles (the loop tested)


@triton.jit
def rms_norm_forward_kernel(x, gate, weight, y, rstd, sx, sg, sy, N, M, eps, D: tl.constexpr,
                            BLOCK_D: tl.constexpr, ROWS: tl.constexpr, GATED: tl.constexpr, REPLICAS: tl.constexpr):
    """Grid ``(cdiv(N, ROWS),)``: program i normalizes rows i * ROWS .. i * ROWS + ROWS - 1 (row n by weight row
    n // M when REPLICAS)."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    mask = row_ok[:, None] & (cols < D)[None, :]
    at = rows.to(tl.int64)[:, None]  # N * D may pass 2^31
    u = tl.load(x + at * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if GATED:
        g = tl.load(gate + at * sg + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        u = u * tl.sigmoid(g)
    # eps arrives as float64 where torch.compile launches the kernel (float32 from a plain launch)
    r = 1.0 / tl.sqrt_rn((tl.sum(u * u, axis=1) / D + eps).to(tl.float32))
    if REPLICAS:
        w = tl.load(weight + (rows // M).to(tl.int64)[:, None] * D + cols[None, :], mask=mask, other=0.0)
        w = w.to(tl.float32)
    else:
        w = tl.load(weight + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
    tl.store(y + at * sy + cols[None, :], (u * r[:, None] * w).to(y.dtype.element_ty), mask=mask)
    tl.store(rstd + rows, r, mask=row_ok)


@triton.jit
def rms_norm_backward_kernel(x, gate, weight, rstd, dy, dx, dgate, dw, sx, sg, sdy, sdx, sdg, M,
                             D: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr, GATED: tl.constexpr,
                             WANT_DX: tl.constexpr, WANT_DGATE: tl.constexpr, WANT_DW: tl.constexpr):
    """Grid ``(P, R)``: program (p, r) takes the row tiles p, p + P, ... of rows r * M .. r * M + M - 1 (weight row
    r); it writes dx (and dgate) of its rows and row r * P + p of the ``[R * P, D]`` float32 partial weight
    gradients."""
    pid, replica = tl.program_id(0), tl.program_id(1)
    programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    w = tl.load(weight + replica.to(tl.int64) * D + cols, mask=col_ok, other=0.0).to(tl.float32)
    acc = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)  # summed over rows once, after the loop
    first, end = replica.to(tl.int64) * M, replica.to(tl.int64) * M + M
    for start in range(first + pid * ROWS, end, programs * ROWS):
        rows = start + tl.arange(0, ROWS)
        row_ok = rows < end
        mask = row_ok[:, None] & col_ok[None, :]
        at = rows.to(tl.int64)[:, None]
        u = tl.load(x + at * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if GATED:
            s = tl.sigmoid(tl.load(gate + at * sg + cols[None, :], mask=mask, other=0.0).to(tl.float32))
            u = u * s
        r = tl.load(rstd + rows, mask=row_ok, other=0.0)[:, None]  # 0 past the last row: nothing accumulates there
        n = u * r
        d = tl.load(dy + at * sdy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if WANT_DW:
            acc += d * n
        if WANT_DX or WANT_DGATE:
            dn = d * w[None, :]
            du = r * (dn - n * (tl.sum(dn * n, axis=1) / D)[:, None])
            if GATED:
                if WANT_DX:
                    tl.store(dx + at * sdx + cols[None, :], (du * s).to(dx.dtype.element_ty), mask=mask)
                if WANT_DGATE:
                    tl.store(dgate + at * sdg + cols[None, :], (du * u * (1.0 - s)).to(dgate.dtype.element_ty),
                             mask=mask)
            else:
                tl.store(dx + at * sdx + cols[None, :], du.to(dx.dtype.element_ty), mask=mask)
    if WANT_DW:
        tl.store(dw + (replica * programs + pid).to(tl.int64) * D + cols, tl.sum(acc, axis=0), mask=col_ok)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` over t's leading dims, a view where the strides allow (else a copy), channels adjacent."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 or rows.shape[-1] == 1 else rows.contiguous()


def _tiling(D: int) -> tuple[int, int, int]:
    """(BLOCK_D, ROWS, num_warps) for feature dim D; not from N, so one compiled kernel serves every length."""
    block = triton.next_power_of_2(D)
    rows = max(1, TILE // block)
    return block, rows, min(16, max(4, rows * block // 512))


@functools.cache  # a host query, made once: none inside a CUDA graph capture
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _backward_programs(device: torch.device, tiles: int) -> int:
    """Programs of the backward grid: enough to fill the GPU, but no more than there are row tiles. A fixed number
    for the device, whatever the values: the partial-sum buffer's shape depends on the shapes alone."""
    if device.type != "cuda":
        return min(tiles, INTERPRETER_PROGRAMS)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return min(tiles, PROGRAMS_PER_SM * _sm_count(index))


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm of x (gate None) or of x * sigmoid(gate) over the last dim, weighted by ``weight`` (``[D]``, or
    ``[R, D]``: one per block of x's rows)."""

    @staticmethod
    def forward(ctx, x, weight, gate, eps):
        shape, D = x.shape, x.shape[-1]
        x2 = _rows(x)
        g2 = None if gate is None else _rows(gate)
        N = x2.shape[0]
        replicas = weight.ndim == 2
        out_dtype = x.dtype if gate is None else torch.promote_types(x.dtype, gate.dtype)
        y = torch.empty((N, D), dtype=out_dtype, device=x.device)
        rstd = torch.empty(N, dtype=torch.float32, device=x.device)
        block, rows, warps = _tiling(D)
        rms_norm_forward_kernel[(triton.cdiv(N, rows),)](
            x2, x2 if g2 is None else g2, weight, y, rstd, x2.stride(0), 0 if g2 is None else g2.stride(0), y.stride(0),
            N, N // len(weight) if replicas else N, eps, D=D, BLOCK_D=block, ROWS=rows, GATED=g2 is not None,
            REPLICAS=replicas, num_warps=warps,
            enable_fp_fusion=True,  # no bit-for-bit promise here (the sums differ from torch's anyway)
        )
        ctx.save_for_backward(x2, weight, g2, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels' gradients are not themselves differentiable
    def backward(ctx, dy):
        x2, weight, g2, rstd = ctx.saved_tensors
        want_dx, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_dgate = g2 is not None and ctx.needs_input_grad[2]
        N, D = x2.shape
        R = 1 if weight.ndim == 1 else len(weight)
        M = N // R  # rows per weight
        dy2 = _rows(dy)
        block, rows, warps = _tiling(D)
        programs = _backward_programs(x2.device, triton.cdiv(M, rows))
        dx = torch.empty((N, D), dtype=x2.dtype, device=x2.device) if want_dx else None
        dgate = torch.empty((N, D), dtype=g2.dtype, device=x2.device) if want_dgate else None
        partial = torch.empty((R, programs, D), dtype=torch.float32, device=x2.device) if want_dw else None
        unused = rstd  # stands for the outputs not asked for: the kernel never touches them
        rms_norm_backward_kernel[(programs, R)](
            x2, x2 if g2 is None else g2, weight, rstd, dy2, unused if dx is None else dx,
            unused if dgate is None else dgate, unused if partial is None else partial,
            x2.stride(0), 0 if g2 is None else g2.stride(0), dy2.stride(0), D, D, M,
            D=D, BLOCK_D=block, ROWS=rows, GATED=g2 is not None, WANT_DX=want_dx, WANT_DGATE=want_dgate,
            WANT_DW=want_dw, num_warps=warps, enable_fp_fusion=True,
        )
        dweight = None
        if want_dw:
            dweight = partial.sum(1).view(weight.shape)
            if weight.dtype != torch.float32:  # a model cast to half precision: the gradient in the weight's dtype
                dweight = dweight.to(weight.dtype)
        dx = None if dx is None else dx.view(ctx.shape)
        dgate = None if dgate is None else dgate.view(ctx.shape)
        return dx, dweight, dgate, None


def _check(x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor | None) -> None:
    D = x.shape[-1] if x.ndim else 0
    rows = x.numel() // D if D else 0
    replicas = weight.ndim == 2 and weight.shape[1] == D and len(weight) > 0 and rows % len(weight) == 0
    if x.ndim < 1 or (weight.shape != (D,) and not replicas):
        raise ValueError(f"weight must be [D] for x [..., D] (or [R, D], R dividing x's rows); got x {tuple(x.shape)} "
                         f"and weight {tuple(weight.shape)}")
    if not 1 <= D <= MAX_DIM or x.numel() == 0:
        raise ValueError(f"the norm kernels take 1 <= D <= {MAX_DIM} features and a non-empty x; got "
                         f"{tuple(x.shape)} (decaylab.ops.norm runs other shapes on torch)")
    tensors = [("x", x), ("weight", weight)] + ([] if gate is None else [("gate", gate)])
    for name, t in tensors:
        if t.dtype not in KERNEL_DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32 (got {t.dtype}); decaylab.ops.norm runs "
                             f"other dtypes on torch")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if gate is not None and gate.shape != x.shape:
        raise ValueError(f"gate must have x's shape {tuple(x.shape)}; got {tuple(gate.shape)}")
    if x.device.type != "cuda" and not interpreter_active():
        raise ValueError(f"the norm kernels run on CUDA tensors (got {x.device}); use decaylab.ops.norm on CPU, or "
                         f"set TRITON_INTERPRET=1 before importing triton to simulate the kernels")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, gate: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm over the last dim of x ``[..., D]`` (of x * sigmoid(gate) with a gate of x's shape), weight ``[D]``;
    a weight ``[R, D]`` weighs R equal blocks of x's rows (flattened in order), one row of it each."""
    _check(x, weight, gate)
    weight = weight if weight.is_contiguous() else weight.contiguous()  # the kernels read it as adjacent values
    return RMSNormFunction.apply(x, weight, gate, float(eps))


__all__ = ["KERNEL_DTYPES", "MAX_DIM", "RMSNormFunction", "rms_norm", "rms_norm_backward_kernel",
           "rms_norm_forward_kernel"]
