"""One whole optimizer step (forward, backward, clipping, AdamW) captured as a CUDA graph and replayed.

A small model at a short context (the PTB studies: 8.8M parameters, 16 x 128 tokens per step) runs hundreds of
tiny kernels per step; launched one by one from Python, the step costs what the host needs to issue them, not
what the GPU needs to run them. Replaying a captured graph issues them all in one call, and the step no longer
reads anything back from the GPU: the loss and gradient norm stay on the device until the loop asks for them.

The capture follows the recipe for whole-network capture: a few warm-up steps on a side stream (they build the
kernels, the optimizer state and the autocast and positional-encoding caches), then one captured step. The
warm-up steps must not change training, so the parameters, the optimizer state and the random-number state are
restored afterwards: the first replay takes the same optimizer step 0 an eager run would.

What the graph reads each replay (its static inputs): the token buffers, filled by ``copy_`` from the host batch,
and the learning rate, one device tensor that every parameter group shares, filled before each replay.
Requirements on the step, checked by the trainer before it builds one: a CUDA device, one process (no DDP/FSDP
collectives in the graph), no torch.compile, and nothing in the model that reads a value back to the host.
"""

from __future__ import annotations

import contextlib

import torch

from decaylab.training.weight_cast import call_with_cast_weights, castable_linear_weights

IGNORE_INDEX = -100
WARMUP_STEPS = 3


class GraphedTrainStep:
    """``step(x, y, lr) -> (loss, grad_norm)`` as device tensors; see the module docstring."""

    def __init__(self, model: torch.nn.Module, forward_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 *, rows: int, seq_len: int, grad_accum: int, max_norm: float, autocast_dtype: torch.dtype | None):
        device = next(model.parameters()).device
        if rows % grad_accum:
            raise ValueError(f"{rows} rows per step do not split into train.grad_accum={grad_accum} micro-batches")
        self.model, self.forward_model, self.optimizer = model, forward_model, optimizer
        self.grad_accum, self.max_norm, self.autocast_dtype = grad_accum, max_norm, autocast_dtype
        self.x = torch.zeros(rows, seq_len, dtype=torch.long, device=device)
        self.y = torch.zeros(rows, seq_len, dtype=torch.long, device=device)
        # One learning-rate tensor for every group: filled in place, so the captured AdamW reads the new value.
        self.lr = torch.zeros((), dtype=torch.float32, device=device)
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        # The matmul weights cast once per step for all layers (weight_cast.py: the same bits, ~80 fewer kernels).
        self.cast_weights = castable_linear_weights(forward_model) if autocast_dtype is not None else {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss = self.grad_norm = None

    # ---------------------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # The autocast weight cache would hold casts made during capture; a graph must recompute them per replay.
        return torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False)

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's kernels: everything between reading the static inputs and the optimizer update."""
        micro = self.x.shape[0] // self.grad_accum
        loss_sum = torch.zeros((), device=self.x.device)
        for i in range(self.grad_accum):
            part = slice(i * micro, (i + 1) * micro)
            with self._autocast():  # the mean over scored tokens (decaylab.ops.linear_cross_entropy)
                loss = call_with_cast_weights(self.forward_model, self.cast_weights, self.autocast_dtype,
                                              self.x[part], targets=self.y[part])
            (loss / self.grad_accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm, foreach=True)
        self.optimizer.step()
        return loss_sum / self.grad_accum, grad_norm

    def _parameters(self) -> list[torch.Tensor]:
        """The tensors the optimizer updates (restored after the warm-up)."""
        return list(self.model.parameters())

    def _capture(self) -> None:
        if self.x.device.type != "cuda":
            raise ValueError("a CUDA-graph train step needs the model on a CUDA device (train.cuda_graph=off on CPU)")
        params = self._parameters()
        saved_params = [p.detach().clone() for p in params]
        saved_state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                       for p, s in self.optimizer.state.items()}  # fmt: skip
        saved_rng = torch.cuda.get_rng_state()
        self.forward_model.train()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.optimizer.zero_grad(set_to_none=True)
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in the graph pool
        self.graph = torch.cuda.CUDAGraph()
        # Captured on a stream of this step's own, not torch's one default capture stream: cuBLAS keeps a workspace
        # per (handle, stream) and the graph keeps the pointer, so graphs captured on one stream share a workspace
        # and must never run at once. Runs trained together replay theirs on several streams at once.
        self.capture_stream = own_stream()
        with torch.cuda.graph(self.graph, stream=self.capture_stream):
            self.loss, self.grad_norm = self._step()
        # Undo the warm-up: parameters, optimizer moments and step counts, and the dropout stream (the learning
        # rate needs nothing: the steps read it and never write it).
        with torch.no_grad():
            for p, saved in zip(params, saved_params):
                p.copy_(saved)
            for p, state in self.optimizer.state.items():
                before = saved_state.get(p, {})
                for key, value in state.items():
                    if torch.is_tensor(value):
                        value.copy_(before[key]) if key in before else value.zero_()
        torch.cuda.set_rng_state(saved_rng)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        # Host batches are copied without a sync: a copy from pageable memory is staged before copy_ returns.
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.lr.fill_(lr)
        if self.x.device.type != "cuda":  # no graphs on a CPU: the same step run eagerly (replicas, in tests)
            self.optimizer.zero_grad(set_to_none=True)
            return self._step()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.loss, self.grad_norm


def own_stream() -> torch.cuda.Stream:
    """The current stream where it is not the default one (a run trained together has its own), else a new one."""
    current = torch.cuda.current_stream()
    return torch.cuda.Stream() if current == torch.cuda.default_stream() else current


def graph_step_unsupported(device: torch.device, world_size: int, compile_model: bool) -> str | None:
    """Why a run cannot capture its step (None when it can)."""
    if device.type != "cuda":
        return "it needs a CUDA device"
    if world_size > 1:
        return "it runs in one process only (no DDP/FSDP collectives in the graph)"
    if compile_model:
        return "it replaces train.compile (set one of them)"
    return None


__all__ = ["WARMUP_STEPS", "GraphedTrainStep", "graph_step_unsupported"]
