"""Several runs trained in one process, one optimizer step of each in turn: ``train_together(runs)``.

Why: a small model's step is a few milliseconds of tiny kernels that leave most of a GPU's multiprocessors idle.
Runs in separate processes do not fill it (a GPU time-slices between processes: six graphed ``ptb-small`` runs side
by side made 1.01x the tokens/s of one, docs/benchmarks.md, "Training on a GPU"). Runs in one process may: each
trains on its own CUDA stream, and the host queues one step (one CUDA-graph replay) of every run before the GPU
has finished the first, so that their kernels can run side by side.

On a GPU each run's graphs must draw dropout from a generator state of their own (``_Slot.turn``): a CUDA graph
writes, at each replay, the seed and offset of the state it was captured from into device tensors its dropout
kernels read later, and graphs of several runs captured from one shared state, replaying on several streams at
once, read each other's. Before that fix, eight runs together in the ``paper`` sweep (one H100, 2026-12-06)
diverged in 20 of 186 runs and scored +4.9 % worse in test perplexity on average (``docs/benchmarks-log.md``,
"Runs trained together"); ``tests/training/test_together.py`` holds the GPU test that reproduced it.

Each run is exactly what ``train()`` would make of it: its own model, optimizer, data order, checkpoints and run
directory. Its random-number streams (CPU and CUDA generators, which dropout draws from) are swapped in around
each of its steps, so a run's dropout masks do not depend on which runs share its process. A run that raises is
recorded and dropped; the others go on (a CUDA error that breaks the process stops them all, as it would stop one).
A run's ``train_time_s`` and ``tokens_per_s`` in summary.json are those of the group's wall time from its first step
to this run's end: the rate the run trained at while sharing the process (and the card) with the others. Its own
step calls would not do: they queue work that the GPU runs later, and replicas stacked with it do no work of their
own (their lead's steps train them all). The throughput of the whole group is the tokens of all its runs over the
call's wall time (``decaylab bench training --together``). The ``tokens_per_s`` of a run's log lines still time its
own step calls only.
Each run a group trains to its end also gets, in summary.json, the group's size (``together_runs``), the seconds
it spent building every run (data, model, optimizer) before the first step (``together_build_s``), the process's
age when the group began (``together_process_s``: its start-up and imports, or for a sweep worker's later groups
the time since it took the group; Linux only), the time the group began
(``together_started_at``, unix seconds) and the seconds from the first step to this run's end
(``together_loop_s``), so that a sweep can tell its groups' training from their fixed cost
(``scripts/fixed_cost.py``), and the number of runs stacked with it as replicas (``together_replicas``, 1 alone).

With ``replicas`` > 1, fresh graphed runs that differ only in their seeds go further: they train as replicas of one
model, one CUDA graph and one set of kernels for all (``decaylab.training.replicas``), on one stream. Their
initialization and data stay their own; their dropout masks come from one generator, so they are not the masks
those runs would draw alone.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from decaylab import rundir
from decaylab.config import to_dict
from decaylab.run.config import RunConfig
from decaylab.training import distributed as dist_utils
from decaylab.training.loop import _Trainer, prepare_run
from decaylab.training.replicas import SeedReplicas
from decaylab.training.start_up import start_up_s


@dataclass
class _Slot:
    """One run in the rotation: its trainer, its paused loop, its stream and its random-number states."""

    trainer: _Trainer
    steps: Generator[None, None, dict[str, Any]]
    stream: Any  # torch.cuda.Stream, or None on a CPU
    cpu_rng: torch.Tensor
    cuda_rng: torch.Generator | None  # a generator state of the run's own (see ``turn``)

    @contextlib.contextmanager
    def turn(self):
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            # The run's own state object, swapped in rather than copied: a CUDA graph keeps the state it was
            # captured from and, at each replay, writes that state's seed and offset into device tensors its
            # dropout kernels read later. Graphs of several runs captured from one shared state would share
            # those tensors while they replay on several streams at once.
            _cuda_generator().graphsafe_set_state(self.cuda_rng)
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            try:
                yield
            finally:
                self.cpu_rng = torch.get_rng_state()


def _cuda_generator() -> torch.Generator:
    torch.cuda.init()  # the default generators exist only once CUDA is initialised (a fresh sweep worker's is not)
    return torch.cuda.default_generators[torch.cuda.current_device()]


def _replica_key(cfg: RunConfig, stored: RunConfig | None, out: Path) -> str | None:
    """Runs with one key differ only in their seeds and may be stacked as replicas (``decaylab.training.replicas``):
    fresh runs (or resumed ones without a checkpoint) that may be graphed (on a CPU the replicas' step runs eagerly).
    None: this run trains on its own."""
    train = cfg.train
    # a resumed run without a checkpoint starts again from step 0 (a sweep's run killed before any): fresh too
    resumed = stored is not None and bool(rundir.list_checkpoints(out))
    if resumed or train.cuda_graph == "off" or train.compile:
        return None
    # Softmax attention under vmap: on an H100 (torch 2.11) every stacked softmax run of the paper sweep had a NaN
    # loss by step 20, while the same runs alone train, and the CPU's per-replica fallback of SDPA matches them.
    # Until a GPU test shows SDPA's batched rule right, softmax runs train on their own streams.
    if cfg.model.mixer == "softmax":
        return None
    settings = to_dict(cfg)
    settings["train"].pop("seed")
    return json.dumps(settings, sort_keys=True)


def _replica_stacks(prepared: list[tuple], replicas: int) -> list[list[int]]:
    """Indices of the prepared runs stacked together: runs of one ``_replica_key``, at most ``replicas`` to a
    stack, in their order; a run alone in its stack is left out."""
    if replicas < 2:
        return []
    by_key: dict[str, list[int]] = {}
    for i, cfg, stored, _, out in prepared:
        key = _replica_key(cfg, stored, out)
        if key is not None:
            by_key.setdefault(key, []).append(i)
    stacks = [members[start:start + replicas] for members in by_key.values()
              for start in range(0, len(members), replicas)]  # fmt: skip
    return [stack for stack in stacks if len(stack) > 1]


def _group_summary(trainer: _Trainer, group: dict[str, Any], looping: float) -> Callable[[], dict[str, Any]]:
    """What a run trained in the group adds to its summary at its end: the group's timing, its stacking, and its
    time and rate over the group's wall time (the module's docstring says why)."""
    stacked = 1 if trainer.replicas is None else len(trainer.replicas.trainers)
    first_step, time_before = trainer.step, trainer.train_time_s  # a resumed run's earlier training counts too

    def extra() -> dict[str, Any]:
        loop_s = time.perf_counter() - looping
        tokens = (trainer.step - first_step) * trainer.cfg.train.tokens_per_step()
        return dict(group, together_replicas=stacked, together_loop_s=round(loop_s, 3),
                    train_time_s=round(time_before + loop_s, 3), tokens_per_s=round(tokens / max(loop_s, 1e-9), 1))

    return extra


def train_together(runs: Sequence[tuple[RunConfig | None, str | Path, bool]],
                   replicas: int = 1) -> list[dict[str, Any] | Exception]:  # fmt: skip
    """Train ``(run_config, out_dir, resume)`` runs in turns (see the module docstring), all on one device.

    ``replicas`` > 1: fresh graphed runs that differ only in their seeds train as replicas of one model, up to
    ``replicas`` to a model, one set of kernels for each (``decaylab.training.replicas``; their dropout masks are
    not those of the runs alone).
    Returns, per run in order, its summary or the exception that stopped it. One process only (no torchrun).
    """
    if replicas < 1:
        raise ValueError(f"replicas={replicas}: give 1 (no stacking) or more runs to a stacked model")
    results: list[dict[str, Any] | Exception | None] = [None] * len(runs)
    started, started_at, age = time.perf_counter(), time.time(), start_up_s()
    prepared = []
    for i, (cfg, out, resume) in enumerate(runs):
        try:
            prepared.append((i, *prepare_run(cfg, Path(out), resume), Path(out)))
        except Exception as error:  # noqa: BLE001 - one run's bad input must not stop the others
            results[i] = error
    devices = {cfg.train.device for _, cfg, _, _, _ in prepared}
    if len(devices) > 1:
        raise ValueError(f"runs trained together share one device; got train.device = {sorted(devices)}")
    if not prepared:
        return results  # type: ignore[return-value]
    ctx = dist_utils.setup(devices.pop())
    if ctx.distributed:
        dist_utils.teardown(ctx)
        raise ValueError("train_together runs in one process; under torchrun train each run with decaylab train")
    slots: dict[int, _Slot] = {}
    shared_cuda_rng = _cuda_generator().graphsafe_get_state() if ctx.device.type == "cuda" else None
    stacks = _replica_stacks(prepared, replicas)
    stack_of = {i: n for n, stack in enumerate(stacks) for i in stack}
    stack_streams: dict[int, Any] = {}  # one stream per stack: its runs read the numbers its replay wrote
    try:
        for i, cfg, stored, changes, out in prepared:
            stream = None
            if ctx.device.type == "cuda":
                stream = stack_streams.get(stack_of.get(i))
                if stream is None:
                    stream = torch.cuda.Stream(ctx.device)
                    if i in stack_of:
                        stack_streams[stack_of[i]] = stream
            try:
                with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    trainer = _Trainer(cfg, stored, out, ctx, changes)  # seeds the global generators
            except Exception as error:  # noqa: BLE001 - one run's bad input must not stop the others
                results[i] = error
                continue
            cuda_rng = _cuda_generator().clone_state() if ctx.device.type == "cuda" else None
            slots[i] = _Slot(trainer, trainer.steps(), stream, torch.get_rng_state(), cuda_rng)
        for stack in stacks:
            trainers = [slots[i].trainer for i in stack if i in slots]
            if len(trainers) > 1:
                shared = SeedReplicas(trainers)
                for trainer in trainers:
                    trainer.replicas = shared
        looping = time.perf_counter()
        group = {"together_runs": len(slots), "together_started_at": round(started_at, 3),
                 "together_build_s": round(looping - started, 3)}
        if age is not None:
            group["together_process_s"] = round(age, 3)
        for slot in slots.values():  # written into the summary of each run that trains to its end here
            slot.trainer.summary_extra = _group_summary(slot.trainer, group, looping)
        while slots:
            for i, slot in list(slots.items()):
                with slot.turn():
                    try:
                        next(slot.steps)
                    except StopIteration as done:
                        results[i] = done.value
                        del slots[i]
                    except Exception as error:  # noqa: BLE001 - recorded per run, as a sweep records failures
                        results[i] = error
                        del slots[i]
    finally:
        for slot in slots.values():  # closes the metrics logs of runs stopped by an interrupt (checkpointed when it
            with slot.turn():       # was a stop between steps: with the run's own random-number states)
                slot.steps.close()
        if shared_cuda_rng is not None:
            _cuda_generator().graphsafe_set_state(shared_cuda_rng)
        dist_utils.teardown(ctx)
    return results  # type: ignore[return-value]


__all__ = ["train_together"]
