"""Hopper (sm_90) kernels in Gluon, Triton's lower-level dialect: the scalar-decay forward and dv sweep
(sweeps.py) and the chunk-parallel backward's dq/dk (grads.py). This module is their host side: which calls they
suit, and their launches, each of which returns False when the kernel cannot be built here so that the caller runs
its Triton kernel instead.

The kernel modules are imported at the first launch, which happens only for calls that ``suits`` accepts (Gluon
present, an sm_90 GPU): elsewhere Gluon's names are never needed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch
import triton

from decaylab.ops.triton.configs import interpreter_active
from decaylab.ops.triton.gluon.tiles import CHUNK, VALUE_BLOCK
from decaylab.ops.triton.blocks import COMPILE_OPTIONS
from decaylab.ops.triton.launch import launch_kernel
from decaylab.ops.triton.plans import LaunchPlan

log = logging.getLogger("decaylab.ops")
# Gluon is experimental and its API moves between Triton releases: these kernels are built for the releases they
# were compiled with (3.6 on the GPU, 3.7 and 3.9 for sm_90 on the CPU); older ones take the Triton kernels.
OLDEST_TRITON = (3, 6)
AVAILABLE = importlib.util.find_spec("triton.experimental.gluon") is not None  # a Triton with Gluon


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# Why the Gluon kernels cannot be used in this process (set when one fails to build): the Triton kernels run instead.
unusable: list[str] = [] if _release(triton.__version__) >= OLDEST_TRITON else [
    f"triton {triton.__version__} is older than {'.'.join(map(str, OLDEST_TRITON))}"]

KEY_DIMS = (64, 128)
MAX_ELEMENTS = 2**36  # of q: its chunk states then span < 2**31 rows, whose TMA coordinates are int32
PROGRAMS_PER_SM = 2  # persistent dq/dk programs
DQK_WARPS = 4
RING = 2  # value pieces in flight per dq/dk program (at most two items' worth: grads.py tracks two items on)


def sm90(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    return _major(device.index if device.index is not None else torch.cuda.current_device()) == 9


@functools.lru_cache(maxsize=None)
def _major(index: int) -> int:
    """The GPU's compute capability major (cached: every layer call asks)."""
    return torch.cuda.get_device_capability(index)[0]


def covers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, cfg: LaunchPlan) -> bool:
    """Whether the Gluon sweeps run this call: the plan asks for them (LaunchPlan.gluon_sweeps, pinned for sm_90)
    and the call suits them (``suits``). Other calls take the Triton kernels."""
    return cfg.gluon_sweeps and suits(q, k, v, log_decay)


def suits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor) -> bool:
    """Whether a call suits the Gluon kernels: Gluon is there, the decay is scalar, the inputs are bf16 (their chunk
    states are bf16 too, copied out of the wgmma operand as they are; fp16 inputs keep fp32 states) with K in
    KEY_DIMS and V a multiple of VALUE_BLOCK up to 256, TMA can address them (16-byte aligned), the GPU is an sm_90
    one (not the interpreter), this Triton builds them (see ``unusable``), and the TMA coordinates of its tokens and
    chunk states fit int32 (chunk states ~ q.numel() / 64 rows)."""
    if not AVAILABLE or unusable or log_decay.ndim != 3 or q.dtype != torch.bfloat16 or q.numel() >= MAX_ELEMENTS:
        return False
    K, V = q.shape[3], v.shape[3]
    return (K in KEY_DIMS and V % VALUE_BLOCK == 0 and V <= 256 and sm90(q.device) and not interpreter_active()
            and q.data_ptr() % 16 == 0 and k.data_ptr() % 16 == 0 and v.data_ptr() % 16 == 0)


@functools.lru_cache(maxsize=None)
def _modules():
    """(descriptors, sweeps, grads): the kernel modules, imported at the first launch."""
    from decaylab.ops.triton.gluon import descriptors, grads, sweeps

    return descriptors, sweeps, grads


def forward(q, k, v, log_decay, o, scale, initial_state, final_state, cu_seqlens, states, state_first, T, count,
            stages) -> bool:
    """kernels.forward_kernel for scalar decay (``count`` sequences or segments; ``states``/``state_first`` None
    when no states are saved); writes o, final_state and states in place. False if this Triton cannot build the
    kernel: the caller then runs the Triton one."""
    H, K, V = q.shape[2], q.shape[3], v.shape[3]
    save = states is not None
    if not save:  # the descriptor needs a buffer; nothing is stored to it
        states, state_first = q.new_empty(1, H, K, V), None

    def launch(d, sweeps, _):
        launch_kernel(
            sweeps.hopper_forward_kernel, (count * H * (V // VALUE_BLOCK),),
            d.tokens(q, K), d.tokens(k, K), d.tokens(v, VALUE_BLOCK), d.states(states), d.tokens(o, VALUE_BLOCK),
            log_decay, o, initial_state, final_state, cu_seqlens, state_first, scale, T, H=H, K=K, V=V,
            BV=VALUE_BLOCK, BT=CHUNK, STAGES=stages, VARLEN=cu_seqlens is not None, HAS_H0=initial_state is not None,
            STORE_HT=final_state is not None, SAVE_STATES=save, num_warps=4, **COMPILE_OPTIONS,
        )
    return _launch(launch)


def dstates_dv(q, k, log_decay, do, dht, dstates, dh0, dv, cu_seqlens, first, scale, T, count, stages) -> bool:
    """chunk_parallel.chunk_dstates_dv_kernel: writes dstates, dh0 and dv in place. False as forward()."""
    H, K, V = q.shape[2], q.shape[3], do.shape[3]

    def launch(d, sweeps, _):
        launch_kernel(
            sweeps.hopper_dstates_dv_kernel, (count * H * (V // VALUE_BLOCK),),
            d.tokens(q, K), d.tokens(k, K), d.tokens(do, VALUE_BLOCK), d.states(dstates), d.tokens(dv, VALUE_BLOCK),
            log_decay, dv, dht, dh0, cu_seqlens, first, scale, T, H=H, K=K, V=V, BV=VALUE_BLOCK, BT=CHUNK,
            STAGES=stages, HAS_DHT=dht is not None, num_warps=4, **COMPILE_OPTIONS,
        )
    return _launch(launch)


def _programs(device: torch.device) -> int:
    """Persistent dq/dk programs for this GPU (a CPU device, where the compile test captures the launch: one)."""
    if device.type != "cuda":
        return 1
    return PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def new_gate_grad(log_decay: torch.Tensor, K: int) -> torch.Tensor:
    """The fp32 buffer dqk() writes the gate gradient to: zeros where its key blocks add their shares (K > 64)."""
    return (torch.zeros_like if K > CHUNK else torch.empty_like)(log_decay, dtype=torch.float32)


def dqk(q, k, v, log_decay, do, states, dstates, chunk_bos, chunk_end, dq, dk, dg, scale, chunks) -> bool:
    """Writes dq, dk and the gate gradient dg (new_gate_grad: the key blocks' shares add up there) for ``chunks``
    chunks (bounds chunk_bos/chunk_end); states enter and dstates leave each chunk. False as forward()."""
    H, K, V = q.shape[2], q.shape[3], v.shape[3]
    items = chunks * H * (K // CHUNK)

    def launch(d, _, kernels):
        launch_kernel(
            kernels.hopper_dqk_kernel, (max(min(items, _programs(q.device)), 1),),
            d.tiles(q), d.tiles(k), d.tiles(v), d.tiles(do), d.state_tiles(states), d.state_tiles(dstates),
            d.tiles(dq), d.tiles(dk), log_decay, dq, dk, dg, chunk_bos, chunk_end, scale, items, H=H, K=K, V=V,
            BT=CHUNK, RING=RING, num_warps=DQK_WARPS, **COMPILE_OPTIONS,
        )
    return _launch(launch)


def _launch(launch) -> bool:
    """Run ``launch(descriptors, sweeps, grads)``. A Triton whose Gluon differs from the one these kernels were
    written for fails to build them (at the first call per shape, before anything runs; or at the import of the
    kernel modules, for a name this Gluon lacks): that is logged once, every later call takes the Triton kernels
    (``unusable``), and this call returns False so that its caller runs the Triton kernel."""
    try:
        launch(*_modules())
    except Exception as error:
        if unusable or not _is_build_error(error):
            raise
        unusable.append(f"{type(error).__name__}: {str(error)[:500]}")
        log.warning("decaylab: the Gluon kernels for Hopper do not build with triton %s (%s); the Triton kernels run "
                    "instead. Set hopper_sweeps=False and hopper_dqk=False (launch knobs) to skip them.",
                    triton.__version__, unusable[0])
        return False
    return True


def _is_build_error(error: Exception) -> bool:
    """Whether ``error`` came from building the kernel (Gluon's front end or Triton's compiler), not from running
    it: CUDA errors are RuntimeErrors too, and they must surface."""
    return not (isinstance(error, RuntimeError) and "CUDA" in str(error))
