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
A run's ``tokens_per_s`` counts the time spent in its own steps only, not its turns' waits: the throughput of the
whole group is the tokens of all its runs over the call's wall time (``decaylab bench training --together``).
Each run a group trains to its end also gets, in summary.json, the group's size (``together_runs``), the seconds
it spent building every run (data, model, optimizer) before the first step (``together_build_s``), the process's
age when the group began (``together_process_s``: its start-up and imports; Linux only), the time the group began
(``together_started_at``, unix seconds) and the seconds from the first step to this run's end
(``together_loop_s``), so that a sweep can tell its groups' training from their fixed cost
(``scripts/fixed_cost.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Sequence

import torch

from decaylab.run.config import RunConfig
from decaylab.training import distributed as dist_utils
from decaylab.training.loop import _Trainer, prepare_run


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


def _process_age() -> float | None:
    """Seconds since this process started (from /proc; None elsewhere)."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _cuda_generator() -> torch.Generator:
    torch.cuda.init()  # the default generators exist only once CUDA is initialised (a fresh sweep worker's is not)
    return torch.cuda.default_generators[torch.cuda.current_device()]


def train_together(runs: Sequence[tuple[RunConfig | None, str | Path, bool]]) -> list[dict[str, Any] | Exception]:
    """Train ``(run_config, out_dir, resume)`` runs in turns (see the module docstring), all on one device.

    Returns, per run in order, its summary or the exception that stopped it. One process only (no torchrun).
    """
    results: list[dict[str, Any] | Exception | None] = [None] * len(runs)
    started, started_at, age = time.perf_counter(), time.time(), _process_age()
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
    try:
        for i, cfg, stored, changes, out in prepared:
            stream = torch.cuda.Stream(ctx.device) if ctx.device.type == "cuda" else None
            try:
                with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    trainer = _Trainer(cfg, stored, out, ctx, changes)  # seeds the global generators
            except Exception as error:  # noqa: BLE001 - one run's bad input must not stop the others
                results[i] = error
                continue
            cuda_rng = _cuda_generator().clone_state() if ctx.device.type == "cuda" else None
            slots[i] = _Slot(trainer, trainer.steps(), stream, torch.get_rng_state(), cuda_rng)
        looping = time.perf_counter()
        group = {"together_runs": len(slots), "together_started_at": round(started_at, 3),
                 "together_build_s": round(looping - started, 3)}
        if age is not None:
            group["together_process_s"] = round(age, 3)
        for slot in slots.values():  # written into the summary of each run that trains to its end here
            slot.trainer.summary_extra = lambda: dict(group, together_loop_s=round(time.perf_counter() - looping, 3))
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
        for slot in slots.values():
            slot.steps.close()  # closes the metrics logs of runs stopped by an interrupt
        if shared_cuda_rng is not None:
            _cuda_generator().graphsafe_set_state(shared_cuda_rng)
        dist_utils.teardown(ctx)
    return results  # type: ignore[return-value]


__all__ = ["train_together"]
