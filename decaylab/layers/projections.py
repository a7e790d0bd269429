"""Several bias-free ``nn.Linear`` layers applied to one input, as one matmul on CUDA: ``project(x, *linears)``.

A small model's GPU step is bound by how many kernels it launches (``docs/benchmarks.md``, "Training on a GPU").
The q, k, v and output-gate projections of a mixer, and the two input projections of the gated FFN, read the same
input; run one by one, each casts that input to the autocast dtype, runs its own matmul forward and two backward,
and autograd adds their input gradients one by one. Their weights stacked into one matrix make one cast, one matmul
forward and two backward, and the input gradient is summed inside the matmul (in float32, rounded once).

The layers keep their own ``nn.Linear`` modules (the same parameters, initialisation and checkpoints); only the
call changes. On a CPU the layers run one by one by default, so that CPU results keep their bits; ``fuse(True)``
stacks them everywhere (tests), ``fuse(False)`` nowhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from decaylab.ops.switch import DeviceSwitch

_switch = DeviceSwitch()  # stacked on CUDA unless fuse says otherwise


def fuse(enabled: bool | None):
    """Within the context, ``project`` stacks the weights everywhere (True), nowhere (False), or on CUDA (None)."""
    return _switch.forced(enabled)


def stacks(x: torch.Tensor, *linears: nn.Linear) -> bool:
    """Whether ``project`` runs these linears on ``x`` as one matmul."""
    return _switch.on(x.device) and len(linears) >= 2 and all(linear.bias is None for linear in linears)


def project_stacked(x: torch.Tensor, *linears: nn.Linear) -> torch.Tensor:
    """The linears' outputs side by side in the last dim, ``[..., sum of out_features]``, from one matmul."""
    return F.linear(x, torch.cat([linear.weight for linear in linears]))


def project(x: torch.Tensor, *linears: nn.Linear) -> tuple[torch.Tensor, ...]:
    """``tuple(linear(x) for linear in linears)``, computed as one matmul where stacking applies."""
    if not stacks(x, *linears):
        return tuple(linear(x) for linear in linears)
    return project_stacked(x, *linears).split([linear.out_features for linear in linears], dim=-1)


__all__ = ["fuse", "project", "project_stacked", "stacks"]
