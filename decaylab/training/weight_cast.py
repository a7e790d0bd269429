"""The model's matmul weights cast to the autocast dtype in one launch per step, instead of one per layer.

Under autocast every ``nn.Linear`` casts its float32 weight to bfloat16 at each call, and autograd casts the weight's
bfloat16 gradient back to float32: two kernels per weight and step, about 80 of the ~750 tiny kernels of a graphed
``ptb-small`` step, whose time is set by how many kernels it launches, not by their work
(``docs/benchmarks.md``, "Training on a GPU"). ``cast_once(model, dtype)`` makes the same casts for all the weights
at once: one concatenation and one cast forward, one concatenation and one cast backward. The values are the
same ones autocast makes (each weight rounded to the dtype, each gradient computed in the dtype and widened), so
the model trains to the same bits; ``call_with_cast_weights`` runs the model on those copies.

Only weights that autocast itself would cast are taken: the weight of an ``nn.Linear`` that no other module uses
(a tied embedding keeps its float32 weight for the lookup).
"""

from __future__ import annotations

import torch
from torch import nn


def castable_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of the ``nn.Linear`` weights that only ``nn.Linear`` modules use."""
    linear, other = {}, set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if isinstance(module, nn.Linear) and param_name == "weight":
                linear.setdefault(id(param), (f"{module_name}.{param_name}".lstrip("."), param))
            else:
                other.add(id(param))
    return {name: p for key, (name, p) in linear.items() if key not in other and p.requires_grad}


class _CastAll(torch.autograd.Function):
    """Many tensors cast to one dtype through one flat buffer; gradients widened back the same way."""

    @staticmethod
    def forward(ctx, dtype: torch.dtype, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.shapes = [w.shape for w in weights]
        ctx.dtypes = [w.dtype for w in weights]
        flat = torch.cat([w.reshape(-1) for w in weights]).to(dtype)
        return tuple(part.view(shape) for part, shape in zip(flat.split([w.numel() for w in weights]), ctx.shapes))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        first = next(g for g in grads if g is not None)
        parts = [
            (g if g is not None else first.new_zeros(shape)).reshape(-1) for g, shape in zip(grads, ctx.shapes)
        ]
        # One widening for all: every weight here has one float dtype (checked by ``cast_once``).
        flat = torch.cat(parts).to(ctx.dtypes[0])
        widened = (part.view(shape) for part, shape in zip(flat.split([p.numel() for p in parts]), ctx.shapes))
        return (None, *widened)


def cast_once(weights: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors cast to ``dtype`` (differentiable), in one launch each way."""
    if len({w.dtype for w in weights.values()}) > 1:
        raise ValueError("cast_once takes weights of one dtype; cast groups of each dtype separately")
    if not weights:
        return {}
    return dict(zip(weights, _CastAll.apply(dtype, *weights.values())))


def call_with_cast_weights(model: nn.Module, weights: dict[str, nn.Parameter], dtype: torch.dtype | None,
                           *args, **kwargs):
    """``model(*args, **kwargs)`` with its listed weights replaced by their ``dtype`` copies (``cast_once``).

    ``dtype`` None (no autocast) or no weights: the plain call.
    """
    if dtype is None or not weights:
        return model(*args, **kwargs)
    return torch.func.functional_call(model, cast_once(weights, dtype), args, kwargs)


__all__ = ["call_with_cast_weights", "cast_once", "castable_linear_weights"]
