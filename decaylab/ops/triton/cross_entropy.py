"""The language-model loss on a GPU with one logits buffer: ``cross_entropy(x @ weight.T, targets)``.

The plain formula under autocast writes the logits in bf16, converts them to float32, writes the log-softmax,
and in the backward fills a one-hot gradient, reads the log-softmax again, writes its gradient and converts that
back to bf16: about 40 bytes of memory traffic per logit. At a large vocabulary those passes are a good part of a
step (the ``160m`` preset: 16,384 tokens x 50,432 words a step, 0.8 G logits) and their float32 copies most of its
activation memory.

Here the logits are written once, in the matmul's dtype, and one kernel reads each row twice: a first pass for
its log-sum-exp (online max and sum, float32) and loss, a second that overwrites the row with the loss's gradient
``(softmax - onehot) / count`` (count: the scored rows, for a mean), so the forward leaves the gradient in the
logits' place, and the backward is two matmuls with it: ``dx = G @ W`` and ``dW = G.T @ x``, times the
upstream gradient. About 12 bytes per logit, one ``[N, vocab]`` buffer in the matmul's dtype.

The logits are rounded to the matmul's dtype as in the plain formula (autocast's bf16 linear, then ``.float()``);
the gradient is rounded to that dtype where the plain formula's is rounded for its bf16 matmul backward. Without
autocast everything stays in the inputs' dtype (float32: the plain formula's numbers to rounding).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096  # logits per step of a row's loops (a power of two); 16 float32 values a thread on 8 warps
NUM_WARPS = 8


@triton.jit
def cross_entropy_rows_kernel(logits, targets, losses, scale, stride, vocab, ignore_index, BLOCK: tl.constexpr,
                              GRAD: tl.constexpr):
    """Program i: row i's loss ``lse - logit[target]`` (0 for an ignored row) into ``losses[i]``; with GRAD the row
    overwritten by ``(softmax - onehot) * scale[0]`` (zeros for an ignored row)."""
    row = tl.program_id(0)
    base = logits + row.to(tl.int64) * stride
    target = tl.load(targets + row).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    top = tl.full([], float("-inf"), tl.float32)
    total = tl.zeros([], tl.float32)
    for start in range(0, vocab, BLOCK):
        z = tl.load(base + start + cols, mask=start + cols < vocab, other=float("-inf")).to(tl.float32)
        new_top = tl.maximum(top, tl.max(z, axis=0))
        total = total * tl.exp(top - new_top) + tl.sum(tl.exp(z - new_top), axis=0)
        top = new_top
    lse = top + tl.log(total)
    keep = target != ignore_index
    # A target outside the vocabulary makes the row's loss and gradient NaN (torch asserts on the device; a NaN
    # loss stops a run with its own message). Such a row and an ignored one read column 0, never past the row.
    bad = keep & ((target < 0) | (target >= vocab))
    picked = tl.load(base + tl.where(keep & ~bad, target, 0)).to(tl.float32)
    tl.store(losses + row, tl.where(bad, float("nan"), tl.where(keep, lse - picked, 0.0)))
    if GRAD:
        factor = tl.where(bad, float("nan"), tl.where(keep, tl.load(scale), 0.0))
        for start in range(0, vocab, BLOCK):
            at = start + cols
            z = tl.load(base + at, mask=at < vocab, other=0.0).to(tl.float32)
            g = tl.exp(z - lse) * factor
            g = tl.where(at == target, g - factor, g)
            tl.store(base + at, g.to(logits.dtype.element_ty), mask=at < vocab)


def _row_losses(logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, ignore_index: int,
                grad: bool) -> torch.Tensor:  # fmt: skip
    """Per-row losses (float32) of ``logits [N, vocab]`` (rows contiguous); with ``grad`` the logits overwritten
    by the gradient of ``sum(losses) * scale``."""
    losses = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    cross_entropy_rows_kernel[(logits.shape[0],)](logits, targets, losses, scale, logits.stride(0), logits.shape[1],
                                                   ignore_index, BLOCK=BLOCK, GRAD=grad, num_warps=NUM_WARPS)
    return losses


def _logits(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x @ weight.T, x and weight in the matmul's dtype): autocast's dtype where it is on, as the plain formula's
    linear would take, else the inputs' promoted dtype."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else \
        torch.promote_types(x.dtype, weight.dtype)
    xc, wc = x.to(dtype), weight.to(dtype)
    with torch.autocast(device, enabled=False):
        return xc @ wc.T, xc, wc


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index, mean):
        logits, xc, wc = _logits(x, weight)
        count = (targets != ignore_index).sum()
        scale = (1.0 / count.float()) if mean else torch.ones((), device=x.device)
        losses = _row_losses(logits, targets, scale.reshape(1), ignore_index, grad=True)
        ctx.save_for_backward(logits, xc, wc)
        ctx.dtypes = x.dtype, weight.dtype
        return losses.sum() * scale

    @staticmethod
    def backward(ctx, grad):
        gradient, xc, wc = ctx.saved_tensors  # the logits' buffer, holding d loss / d logits
        x_dtype, w_dtype = ctx.dtypes
        upstream = grad.to(gradient.dtype)
        with torch.autocast(gradient.device.type, enabled=False):
            gx = (gradient @ wc).mul_(upstream).to(x_dtype) if ctx.needs_input_grad[0] else None
            gw = (gradient.T @ xc).mul_(upstream).to(w_dtype) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None, None


def fused(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
          reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """``cross_entropy(x @ weight.T, targets)`` (mean over scored rows, or sum) with one logits buffer; see the
    module docstring. x ``[N, d]``, weight ``[vocab, d]``, targets ``[N]``, on a CUDA device (or any device under
    TRITON_INTERPRET=1)."""
    # the checks of decaylab.ops.linear_cross_entropy.check_inputs, written out: that module imports this one
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: the fused loss reduces by 'mean' or 'sum'")
    if x.ndim != 2 or weight.ndim != 2 or targets.shape != x.shape[:1] or x.shape[1] != weight.shape[1]:
        raise ValueError(f"need x [N, d], weight [V, d], targets [N]; got {tuple(x.shape)}, {tuple(weight.shape)}, "
                         f"{tuple(targets.shape)}")  # fmt: skip
    mean = reduction == "mean"
    targets = targets.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(x, weight, targets, ignore_index, mean)
    logits = _logits(x, weight)[0]
    losses = _row_losses(logits, targets, torch.ones(1, device=x.device), ignore_index, grad=False)
    return losses.sum() / (targets != ignore_index).sum() if mean else losses.sum()
