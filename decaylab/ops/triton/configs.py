"""Pinned launch plans: no run-time autotuning, so the first call per shape costs only compilation.

A plan (plans.py) is looked up by GPU architecture (compute capability major), decay granularity and head dims.
Under TRITON_INTERPRET=1 (CPU tests) the smallest chunk keeps the simulated programs cheap. Values were chosen from
timings on an H200 (docs/benchmarks-log.md).
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

import torch

from decaylab.ops.triton.knobs import with_knobs
from decaylab.ops.triton.plans import ChunkParallelBackward, DvInSweep, ForwardPlan, FusedDv, LaunchPlan, Splitting, \
    TwoSweepBackward

# Head dims the kernels take; others fall back to the torch chunked backend.
SUPPORTED_DIMS = (16, 32, 64, 128, 256)

# Largest chunk decay span (log2 units) for the vector fast path: split factors stay within 2^±(SPAN_LIMIT/2),
# their products within fp32/bf16 range. Wider spans take the exact element-wise path.
SPAN_LIMIT = 100.0


# (arch major, vector decay, max(K, V) rounded up to 64, 128 or 256) -> plan; arch None: unlisted GPUs.
PINNED_CONFIGS: dict[tuple[int | None, bool, int], LaunchPlan] = {
    # H200, bf16: how each value was chosen, with its timings, is in docs/benchmarks-log.md.
    (None, False, 64): LaunchPlan(
        ForwardPlan(64, 4, 2, max_registers=168),
        ChunkParallelBackward(value_block=64, spans_per_program=4, save_states=True, dv=FusedDv()),
        Splitting(split_percent=85)),
    (None, False, 128): LaunchPlan(
        ForwardPlan(64, 4, 2, value_block=64),
        ChunkParallelBackward(num_stages=3, key_block=64, value_block=64, save_states=True,
                              dv=DvInSweep(num_stages=2)),
        Splitting(split_percent=85), lone_stages=3),
    (None, True, 64): LaunchPlan(
        ForwardPlan(16, 4, 2),
        TwoSweepBackward(key_block=32, max_registers=168, gate_stride=32, bf16_boundaries=True, bf16_dv_partials=True,
                         precise_intra=True),
        Splitting(programs_per_sm=2, sweep_chunk=64)),
    (None, True, 128): LaunchPlan(
        ForwardPlan(16, 4, 2),
        TwoSweepBackward(key_block=64, gate_stride=32, bf16_boundaries=True, bf16_dv_partials=True, precise_intra=True),
        Splitting(programs_per_sm=2, sweep_chunk=64)),
    # Head dims up to 256: D128's plans in narrower blocks, so that the [K, V] fp32 state blocks and the tiles fit
    # the registers, and the segment sweeps in 64 x 64 state blocks (docs/benchmarks-log.md, "Head dims of 256");
    # the vector forward on 8 warps in [256, 128] state blocks, its backward kept on 4 (H100, 2026-12-07 evening).
    (None, False, 256): LaunchPlan(
        ForwardPlan(64, 4, 2, value_block=32),
        ChunkParallelBackward(num_stages=3, key_block=64, value_block=64, save_states=True,
                              dv=DvInSweep(num_stages=2)),
        Splitting(split_percent=85, sweep_block=64)),
    (None, True, 256): LaunchPlan(
        ForwardPlan(16, 8, 2, value_block=128),
        TwoSweepBackward(key_block=32, num_warps=4, gate_stride=32, bf16_boundaries=True, bf16_dv_partials=True,
                         precise_intra=True),
        Splitting(programs_per_sm=1, sweep_chunk=64, sweep_block=64)),
}
# Hopper (sm_90): scalar D128's forward and dv sweep, and the chunk-parallel backward's dq/dk, as the Gluon kernels
# (gluon/; docs/benchmarks-log.md, "Hopper sweeps in Gluon" and "Hopper kernels in Gluon: dq/dk and TMA stores").
PINNED_CONFIGS[(9, False, 128)] = replace(PINNED_CONFIGS[(None, False, 128)], gluon_sweeps=True, backward=replace(
    PINNED_CONFIGS[(None, False, 128)].backward, gluon_dqk=True))

_INTERPRETER_CONFIG = LaunchPlan(ForwardPlan(16, 4, 1))


def interpreter_active() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pick_config(device: torch.device, vector: bool, K: int, V: int) -> LaunchPlan:
    if interpreter_active():
        return _INTERPRETER_CONFIG
    width = next(w for w in (64, 128, 256) if max(K, V) <= w)
    if device.type != "cuda":
        return PINNED_CONFIGS[(None, vector, width)]
    return _gpu_config(device.index if device.index is not None else torch.cuda.current_device(), vector, width)


@functools.lru_cache(maxsize=None)
def _gpu_config(index: int, vector: bool, width: int) -> LaunchPlan:
    """The pinned plan for this GPU's architecture and SM count (cached: every layer call asks for it)."""
    major = torch.cuda.get_device_capability(index)[0]
    config = PINNED_CONFIGS.get((major, vector, width)) or PINNED_CONFIGS[(None, vector, width)]
    return fit_to_sms(config, torch.cuda.get_device_properties(index).multi_processor_count)


def fit_to_sms(config: LaunchPlan, sms: int) -> LaunchPlan:
    """``config`` with its segment thresholds set for a GPU of ``sms`` SMs (Splitting.fitted). ``overridden_config``
    applies it again when ``programs_per_sm`` or ``split_percent`` is overridden."""
    return config.fitted(sms)


def overridden_config(device: torch.device, vector: bool, K: int, V: int, overrides: dict) -> LaunchPlan:
    """The pinned plan with ``overrides``, flat knobs (knobs.py; benchmark sweeps, tests). The picked plan's segment
    thresholds were set for its own ``programs_per_sm`` and ``split_percent``: an override of either alone has them
    re-fitted to the GPU's SMs."""
    config = with_knobs(pick_config(device, vector, K, V), **overrides)
    refit = {"programs_per_sm", "split_percent"} & overrides.keys()
    if refit and not {"split_below", "target_programs"} & overrides.keys():
        config = fit_to_sms(config, torch.cuda.get_device_properties(device).multi_processor_count)
    return config


_override: list[LaunchPlan] = []


class use_config:
    """Context manager forcing one launch plan (benchmark sweeps over chunk size and warps)."""

    def __init__(self, config: LaunchPlan):
        self.config = config

    def __enter__(self) -> LaunchPlan:
        _override.append(self.config)
        return self.config

    def __exit__(self, *exc) -> None:
        _override.pop()


def active_config(device: torch.device, vector: bool, K: int, V: int) -> LaunchPlan:
    return _override[-1] if _override else pick_config(device, vector, K, V)
