"""The language-model loss from hidden states: ``cross_entropy(x @ weight.T, targets)`` without the logits tensor.

A small model with a word-level vocabulary spends most of a CPU training step in its output layer: for PTB (10k
words) at d = 64, the ``[tokens, vocab]`` logits are 40 MB per 1,024 tokens, written by the matmul, read and
rewritten by the softmax, and read again twice in the backward, far more than the caches hold. ``chunked`` scores
a block of rows at a time, so each block of logits is still in cache from the matmul to the loss, keeps only one
log-sum-exp per row, and recomputes the block in the backward (one more ``[rows, d] x [d, vocab]`` matmul). That
pays while the matmuls are cheap next to the memory traffic, i.e. for a narrow model: 1.37x at d = 64, 0.98-1.2x
at d = 128, 0.8x at d = 256 and less beyond (``decaylab bench ops --compare loss``, ``docs/ops.md``), so
``linear_cross_entropy`` takes it on a CPU up to CHUNKED_MAX_WIDTH only. On a GPU a large loss takes the fused
kernel of ``decaylab.ops.triton.cross_entropy`` (the logits written once, in the matmul's dtype, and overwritten by
their gradient in the forward). ``reference`` is the plain formula.

Both take ``x [N, d]``, ``weight [V, d]``, ``targets [N]`` (``ignore_index`` rows score nothing) and return the
mean loss over the scored rows (``reduction="sum"``: the sum), in fp32. Only first derivatives are defined.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
BLOCK_BYTES = 4 << 20  # fp32 logits per block: the best of 1, 4, 16 and 64 MiB at d = 64 and 128, vocab 10k
CHUNKED_MAX_WIDTH = 64  # widest d at which the blocks clearly beat the plain formula on a CPU (see the docstring)
# Logits (rows x vocab) from which a GPU takes the fused loss: 512 MB of float32 logits, whose extra passes in the
# plain formula cost milliseconds a step (160m at B8.T2048: 0.8 G logits). Below it they cost little, and the plain
# formula keeps the numbers of torch's own loss (the PTB studies' steps: 20-82 M logits).
FUSED_MIN_LOGITS = 1 << 27


def reference(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
              reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    logits = F.linear(x, weight).float()  # the model's own logits op, so a GPU trains exactly as before
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)


def rows_per_block(vocab: int) -> int:
    """Rows whose fp32 logits fill about BLOCK_BYTES: a power of two in [16, 4096]."""
    rows = max(1, BLOCK_BYTES // (4 * vocab))
    return min(4096, max(16, 1 << (rows.bit_length() - 1)))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index, mean, block):
        x32, w32 = x.float(), weight.float()
        keep = targets != ignore_index
        safe = torch.where(keep, targets, 0)
        lse = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        for s in range(0, x.shape[0], block):
            z = x32[s : s + block] @ w32.T
            lse[s : s + block] = torch.logsumexp(z, dim=-1)
            picked = z.gather(1, safe[s : s + block, None])[:, 0]
            total += ((lse[s : s + block] - picked) * keep[s : s + block]).sum()
        count = keep.sum()
        ctx.save_for_backward(x, weight, safe, keep, lse)
        ctx.mean, ctx.block = mean, block
        return total / count if mean else total

    @staticmethod
    def backward(ctx, grad):
        x, weight, safe, keep, lse = ctx.saved_tensors
        x32, w32 = x.float(), weight.float()
        # d loss / d logits = (softmax - onehot) per scored row, times the upstream grad (over the count for a mean)
        row_scale = keep.float() * (grad / keep.sum() if ctx.mean else grad)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = torch.empty_like(x32) if need_x else None
        gw = torch.zeros_like(w32) if need_w else None
        rows = torch.arange(min(ctx.block, x.shape[0]), device=x.device)
        for s in range(0, x.shape[0], ctx.block):
            xs = x32[s : s + ctx.block]
            p = (xs @ w32.T).sub_(lse[s : s + ctx.block, None]).exp_()
            p[rows[: xs.shape[0]], safe[s : s + ctx.block]] -= 1.0
            p.mul_(row_scale[s : s + ctx.block, None])
            if need_x:
                gx[s : s + ctx.block] = p @ w32
            if need_w:
                gw.addmm_(p.T, xs)
        return (None if gx is None else gx.to(x.dtype), None if gw is None else gw.to(weight.dtype),
                None, None, None, None)  # fmt: skip


def check_inputs(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str) -> None:
    """The shapes and reduction every implementation here takes, or a ValueError naming them."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: linear_cross_entropy reduces by 'mean' or 'sum'")
    if x.ndim != 2 or weight.ndim != 2 or targets.shape != x.shape[:1] or x.shape[1] != weight.shape[1]:
        raise ValueError(f"need x [N, d], weight [V, d], targets [N]; got {tuple(x.shape)}, {tuple(weight.shape)}, "
                         f"{tuple(targets.shape)}")  # fmt: skip


def chunked(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
            reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    check_inputs(x, weight, targets, reduction)
    return _ChunkedLinearCrossEntropy.apply(x, weight, targets, ignore_index, reduction == "mean",
                                            rows_per_block(weight.shape[0]))  # fmt: skip


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """The chunked loss on a CPU for a narrow model (d <= CHUNKED_MAX_WIDTH), where memory traffic dominates; on a
    GPU the fused loss (one logits buffer, ``decaylab.ops.triton.cross_entropy``) once the logits reach
    FUSED_MIN_LOGITS, unless torch.compile traces it; elsewhere the plain formula."""
    check_inputs(x, weight, targets, reduction)
    large = x.shape[0] * weight.shape[0] >= FUSED_MIN_LOGITS
    # under torch.compile the plain formula: the compiler fuses it, and it traces no raw kernel launch
    if x.device.type == "cuda" and large and not torch.compiler.is_compiling():
        from decaylab.ops.triton.cross_entropy import fused

        return fused(x, weight, targets, ignore_index, reduction)
    narrow_cpu = x.device.type == "cpu" and x.shape[-1] <= CHUNKED_MAX_WIDTH
    impl = chunked if narrow_cpu else reference
    return impl(x, weight, targets, ignore_index, reduction)
