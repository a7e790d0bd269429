"""Runs that differ only in their seeds trained as replicas of one model: one CUDA graph, one set of kernels.

A ``ptb-small`` step is a few hundred tiny kernels; a GPU runs a few of them at once, whatever their size, so
several runs' steps side by side (``decaylab.training.together``) stop gaining at about eight streams. Runs that
differ only in their seed have the same shapes. Their parameters stacked along a new leading dim (``[R, ...]``), one
call of the model under ``torch.func.vmap`` steps all R: each matmul becomes one batched matmul and each
element-wise kernel R times larger, launched once (the custom kernels fold the replicas into their rows,
``decaylab.ops.replicas``).

Each replica keeps what makes it its run: its initialization and data order (its seed), its learning-rate schedule
(the same for all), its own loss, gradient-norm clipping (per replica) and AdamW moments. What it does not keep is
its dropout stream: the replicas draw different masks from one generator (``vmap(randomness="different")``), so a
run trained as a replica sees other masks than the same run trained alone: the same distribution, not the same
bits. Each run's own model stays the one its trainer evaluates and saves: the replicas' parameters and optimizer
state are copied back into it (``write_back``) before a validation, a checkpoint and the end.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from decaylab.run.schedules import learning_rate
from decaylab.training.cuda_graph import IGNORE_INDEX, GraphedTrainStep
from decaylab.training.weight_cast import cast_once


def replica_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[R]`` mean token losses of ``[R, ..., vocab]`` logits against ``[R, ...]`` targets (ignored tokens left out)."""
    R = logits.shape[0]
    losses = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX,
                             reduction="none").view(R, -1)  # fmt: skip
    scored = (targets != IGNORE_INDEX).view(R, -1).sum(1).clamp(min=1)
    return losses.sum(1) / scored


def clip_per_replica(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Each replica's gradient (dim 0 of every parameter) scaled to norm ``max_norm`` at most, as
    ``torch.nn.utils.clip_grad_norm_`` does for one model; returns the ``[R]`` norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    R = grads[0].shape[0]
    # per replica and tensor, then over tensors, as clip_grad_norm_ sums (one float32 norm over a concatenation of
    # millions of values drifts by 1e-5); a few multi-tensor launches in all
    per_replica = [[g[r] for g in grads] for r in range(R)]
    norms = torch.stack([torch.linalg.vector_norm(torch.stack(torch._foreach_norm(views))) for views in per_replica])
    if max_norm != float("inf"):
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for r, views in enumerate(per_replica):
            torch._foreach_mul_(views, scale[r])
    return norms


class ReplicatedGraphedStep(GraphedTrainStep):
    """``step(x [R, rows, T], y, lr) -> (losses [R], grad norms [R])`` of R models of one architecture, captured
    once as a CUDA graph (see the module docstring and ``GraphedTrainStep``)."""

    def __init__(self, models: list[nn.Module], optimizer: torch.optim.Optimizer, *, rows: int, seq_len: int,
                 grad_accum: int, max_norm: float, autocast_dtype: torch.dtype | None):
        """``optimizer``: the first model's AdamW, whose groups and settings the replicas' AdamW copies."""
        template = models[0]
        names = {id(p): name for name, p in template.named_parameters()}
        self.models = models
        self.stacked = {name: torch.stack([m.get_parameter(name).detach() for m in models]).requires_grad_()
                        for name, p in template.named_parameters() if p.requires_grad}  # fmt: skip
        groups = [dict({k: v for k, v in g.items() if k != "params"}, params=[self.stacked[names[id(p)]]
                                                                              for p in g["params"]])
                  for g in optimizer.param_groups]  # fmt: skip
        accepted = inspect.signature(type(optimizer)).parameters  # defaults may hold settings the class fixes
        replicas_optimizer = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})
        super().__init__(template, template, replicas_optimizer, rows=rows, seq_len=seq_len, grad_accum=grad_accum,
                         max_norm=max_norm, autocast_dtype=autocast_dtype)
        R, device = len(models), self.x.device
        self.x = torch.zeros(R, rows, seq_len, dtype=torch.long, device=device)
        self.y = torch.zeros(R, rows, seq_len, dtype=torch.long, device=device)
        self.cast_names = [n for n in self.cast_weights if n in self.stacked]
        self.cast_weights = {}

    def _parameters(self) -> list[torch.Tensor]:
        return list(self.stacked.values())

    def _one_replica(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.forward_model, params, (x,))

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        micro = self.x.shape[1] // self.grad_accum
        loss_sum = torch.zeros(len(self.models), device=self.x.device)
        for i in range(self.grad_accum):
            part = slice(i * micro, (i + 1) * micro)
            params = dict(self.stacked)
            if self.autocast_dtype is not None and self.cast_names:
                params.update(cast_once({n: self.stacked[n] for n in self.cast_names}, self.autocast_dtype))
            with self._autocast():
                logits = vmap(self._one_replica, randomness="different")(params, self.x[:, part])
            losses = replica_losses(logits, self.y[:, part])
            (losses.sum() / self.grad_accum).backward()
            loss_sum += losses.detach()
        grad_norm = clip_per_replica(self._parameters(), self.max_norm)
        self.optimizer.step()
        return loss_sum / self.grad_accum, grad_norm

    @torch.no_grad()
    def write_back(self, index: int, optimizer: torch.optim.Optimizer) -> None:
        """Replica ``index``'s parameters into its own model, its AdamW state into ``optimizer`` (its own)."""
        model = self.models[index]
        for name, stacked in self.stacked.items():
            model.get_parameter(name).copy_(stacked[index])
        names = {id(p): name for name, p in model.named_parameters()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(self.stacked[names[id(p)]])
                if state:
                    optimizer.state[p] = {k: v.clone() if k == "step" else v[index].clone() for k, v in state.items()}


class SeedReplicas:
    """The trainers (``decaylab.training.loop._Trainer``) of runs that differ only in their seeds, all at step 0,
    stepped as one ``ReplicatedGraphedStep``: the first of them to ask for a step replays it for all (each one's
    batch of that step drawn with its own seed); the others take their row of its numbers. They must take their
    steps in turns on one CUDA stream (``decaylab.training.together``), so that each reads its numbers after the
    replay that made them."""

    def __init__(self, trainers: list):
        if len({t.step for t in trainers}) != 1:
            raise ValueError("replicas start together: every run of a replica group must be at the same step")
        self.trainers = list(trainers)
        self.graphed: ReplicatedGraphedStep | None = None
        self._at: int | None = None  # the step replayed last
        self._numbers: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def steps_done(self) -> int | None:
        """The optimizer steps the stacked state holds (None before the first: it is then each run's own)."""
        return None if self._at is None else self._at + 1

    def step(self, trainer, step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(loss, gradient norm, learning rate) of ``trainer``'s step ``step`` (0-based), device tensors."""
        train = trainer.cfg.train
        lr = learning_rate(step, train)
        if self._at != step:
            if self.graphed is None:
                first = self.trainers[0]
                self.graphed = ReplicatedGraphedStep([t.model for t in self.trainers], first.optimizer,
                                                     **first.graph_settings())
            batches = [t.dataset.train_batch(step, train.batch_size, train.seq_len, t.cfg.train.seed, 0, 1)
                       for t in self.trainers]  # fmt: skip
            x, y = (torch.stack(parts) for parts in zip(*batches))
            self._numbers, self._at = self.graphed(x, y, lr), step
        index = self.trainers.index(trainer)
        loss, grad_norm = self._numbers
        return loss[index], grad_norm[index], lr

    def write_back(self, trainer) -> None:
        """``trainer``'s replica into its own model and optimizer (nothing to do before the first step)."""
        if self.graphed is not None:
            self.graphed.write_back(self.trainers.index(trainer), trainer.optimizer)


__all__ = ["ReplicatedGraphedStep", "SeedReplicas", "clip_per_replica", "replica_losses"]
