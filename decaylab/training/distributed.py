"""Single-process or data-parallel execution: process group, device choice, model wrapping, reductions.

Under ``torchrun`` (``WORLD_SIZE > 1``) each process trains on its shard of the global batch
(``train_batch(..., rank, world_size)``) and gradients are averaged across processes: DDP replicates the
parameters, FSDP2 (``fully_shard``) shards them. The average of equal-sized shard means is the mean over the
global batch, so the update equals single-process training with the same global batch up to summation order.
Backends: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process runs and which part of the global batch it owns."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool  # the process group was created by setup() and is destroyed by teardown()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(kind: str, local_rank: int) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def setup(device_kind: str = "auto") -> DistContext:
    """Join the process group that torchrun describes in the environment (or run alone without one)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(device_kind, local_rank)
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        initialized_here = True
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world_size, local_rank, device, initialized_here)


def teardown(ctx: DistContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap_model(model: torch.nn.Module, ctx: DistContext, fsdp: bool) -> torch.nn.Module:
    """DDP or FSDP2 around ``model`` when running on several processes; the model itself otherwise."""
    if not ctx.distributed:
        if fsdp:
            raise ValueError("train.fsdp=true needs several processes: launch with torchrun --nproc-per-node N")
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        # Shard every block separately, then the root: a block's parameters are gathered only while it runs.
        for block in getattr(model, "blocks", getattr(model, "layers", [])):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over processes (the tensor itself when alone)."""
    if ctx.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= ctx.world_size
    return value


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, in rank order (a one-element list when alone)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def model_state(model: torch.nn.Module, ctx: DistContext, fsdp: bool) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state dict on CPU; under FSDP only rank 0 receives it."""
    if fsdp and ctx.distributed:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options())
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], ctx: DistContext, fsdp: bool) -> None:
    if fsdp and ctx.distributed:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state, options=_full_options(broadcast_from_rank0=True))
        return
    model.load_state_dict(state)


_IMPLEMENTATION_KEYS = ("lr", "capturable", "fused", "foreach", "differentiable")


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext, fsdp: bool) -> dict:
    if fsdp and ctx.distributed:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=_full_options())
    return optimizer.state_dict()


def load_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, ctx: DistContext, fsdp: bool
) -> None:
    if fsdp and ctx.distributed:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state, options=_full_options(broadcast_from_rank0=True))
        return
    # A checkpoint's groups carry the implementation flags and learning-rate type of the run that wrote it (a
    # CUDA-graph run: capturable, a tensor lr); the optimizer keeps its own, which fit this device and step.
    own = [{k: g[k] for k in _IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keep in zip(optimizer.param_groups, own):
        group.update(keep)


__all__ = [
    "DistContext",
    "setup",
    "teardown",
    "barrier",
    "wrap_model",
    "all_reduce_mean",
    "gather_objects",
    "broadcast_object",
    "model_state",
    "load_model_state",
    "optimizer_state",
    "load_optimizer_state",
]
