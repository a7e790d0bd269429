"""Pinned launch configurations: no run-time autotuning, so the first call per shape costs only compilation.

A config is looked up by GPU architecture (compute capability major), decay granularity and head dims. Under
TRITON_INTERPRET=1 (CPU tests) the smallest chunk keeps the simulated programs cheap. Values were chosen from
timings on an H200 (docs/benchmarks.md, "GPU kernels").
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace

import torch

# Head dims the kernels take; others fall back to the torch chunked backend.
SUPPORTED_DIMS = (16, 32, 64, 128, 256)

# Largest chunk decay span (log2 units) for the vector fast path: split factors stay within 2^±(SPAN_LIMIT/2),
# their products within fp32/bf16 range. Wider spans take the exact element-wise path.
SPAN_LIMIT = 100.0


@dataclass(frozen=True)
class LaunchConfig:
    """How the kernels are launched.

    chunk: tokens per chunk (BT); num_warps, num_stages: Triton launch options.
    fwd_value_block: value channels per forward program (0: all). The state's columns are independent, so blocks
        halve the [K, V] fp32 state each program holds and multiply the programs; each block recomputes the
        chunk's scores (cheap for scalar decay, a large share of the work for vector decay).
    bwd_chunk, bwd_num_warps, bwd_num_stages: the same for the backward kernels (0: as the forward). The chunk size
        changes the schedule, not the result, and the backward holds twice the tiles of the forward in registers.
    bf16_boundaries: keep the backward's saved boundary states (gate_stride above) in bf16 instead of fp32.
    bwd_key_block: key channels per backward program (0: all). Smaller blocks halve the [K, V] fp32 state held
        in registers and double the programs, at the price of summing partial dv (and scalar gate) gradients.
    bf16_dv_partials: with bf16 inputs and backward key blocks, keep the blocks' partial dv in bf16 instead of
        fp32: half the bytes written and read back, one more bf16 rounding per block.
    gate_stride: the backward saves the fp32 state every this many tokens and restarts the gate gradient's
        reverse cumsum there from its direct form sum_v S * dS (kernels.py); a multiple of ``chunk``.
    precise_intra: for bf16 inputs, run the backward's vector-decay intra-chunk dots on fp32 (tf32) operands instead
        of bf16 (fp16 and fp32 inputs always do). Their rounding dominates the bf16 gate-gradient error.
    chunk_parallel_backward: scalar decay only: the backward as two state sweeps that store every chunk's state
        and state gradient, then one program per (chunk, head) (chunk_parallel.py), instead of two full sweeps
        (kernels.py). The pinned default: faster, and its bf16 gate gradient stays under 5e-3 where the two full
        sweeps measured up to 6.5e-3 (D64); those remain as the low-memory option (no per-chunk states).
    state_stride: with chunk_parallel_backward, tokens per stored state (0: one per backward chunk): a multiple of
        the backward chunk that divides gate_stride. Wider strides store fewer [K, V] states (memory and traffic);
        the gradient kernels rebuild each chunk's state and state gradient from its span's.
    fused_dv: with chunk_parallel_backward, dv is computed by the dq/dk kernel instead of its own kernel: every
        input read once, more tiles per program (for small heads; needs bwd_key_block 0 or >= K).
    dv_in_sweep: with chunk_parallel_backward, dv is computed by the reverse state-gradient sweep (one program per
        sequence, head and value block, every key at once) instead of its own kernel: q, k and do are read once for
        both, and the state gradients are not read back for dv. Needs one stored state per chunk (state_stride 0)
        and excludes fused_dv.
    save_states: with chunk_parallel_backward, the forward stores every chunk's entering state (K x V values per
        chunk and head, kept until the backward) so the backward skips its forward state sweep: faster, at the
        price of that memory. Needs the same chunk forward and backward.
    spans_per_program: with chunk_parallel_backward, stored-state spans (chunks, with state_stride 0) each program
        of the dq/dk gradient kernel walks in a loop: the compiler pipelines the loop, issuing the next span's loads
        during this span's math, where a program of one span has nothing to overlap its loads with.
    bwd_value_block: value channels per step of the chunk-parallel gradient kernel (0: all at once). Smaller
        blocks hold fewer tiles in registers; the result does not change.
    split_below, target_programs: when the forward's programs (sequences x heads x forward value blocks) are fewer
        than split_below, cut the sequences into as many segments (segments.py) as keep (segments x heads) <=
        target_programs. One program walks one segment of one head (and value block), so few long sequences would
        leave SMs idle; splitting costs one extra state sweep each way. With programs enough, a sequence far longer
        than an even share of the tokens (segments.IMBALANCE shares) is still cut to that share, so that one long
        packed document does not run on alone. 0: never split. On a GPU, pick_config sets split_below to
        ``split_percent`` % of the SM count and target_programs to ``programs_per_sm`` times it.
    split_percent: the share of the SMs (in %) that the forward's programs must fill for the sequences to be left
        whole. Scalar decay's chunk-parallel backward walks whole sequences whatever the split, so only its forward
        gains from segments, and then only when its programs leave many SMs idle.
    segment: a fixed segment length in tokens (a multiple of ``gate_stride``), overriding the two above.
    sweep_chunk: tokens per step of the segments' state-only sweeps (0: ``chunk``). Their decay factors are
        2^(G_end - G) <= 1 whatever the chunk, so they can step further than the main kernels, whose intra-chunk
        factors bound the chunk; fewer, larger steps suit a loop that is bound by its step latency.
    sweep_block: rows and columns of the state block one segment-sweep program carries (0: the whole state).
    dv_sweep_num_warps: warps of the reverse sweep that computes dv (dv_in_sweep; 0: the backward's). It carries a
        [K, BV] fp32 state gradient and the chunk's q, k, and dv tiles, more than the other backward kernels hold.
    dv_sweep_num_stages: pipeline stages of that sweep (dv_in_sweep; 0: the backward's). Each stage buffers the
        chunk's q and k in shared memory (32 KB at D128), so more stages can leave room for fewer programs per SM.
    lone_stages: pipeline stages of the forward and of the dv sweep when their programs number at most one per SM
        (0: their usual stages). A deeper pipeline issues a step's loads earlier, but its buffers can take the
        shared memory a second program on the SM would need; with one program per SM there is none to crowd out.
    sms: the GPU's SM count (set by fit_to_sms; 0: unknown, and lone_stages is not applied).
    blocks_adjacent: launch the key or value blocks of one (sequence or chunk, head) next to each other, so they
        run at the same time and the tiles they share are read from HBM once, then from L2 (kernels._program_ids).
        False: a 2-D grid that runs each block index a whole wave after the previous one.
    hopper_sweeps: run the scalar forward and the dv sweep (dv_in_sweep) as the Gluon kernels of hopper.py, which
        start each next chunk's scores while this chunk's state update runs (sm_90 only; 64-token chunks, one
        stored state per chunk; bf16 inputs with K of 64 or 128 and V a multiple of 64; value blocks of 64 whatever
        fwd_value_block and bwd_value_block say; other calls take the Triton kernels).
    hopper_dqk: the chunk-parallel backward's dq, dk and gate gradient as the Gluon kernel of hopper_grads.py
        (persistent programs, two per SM, whose next pieces of input are copied in while they compute; key blocks
        of 64 whatever bwd_key_block says; not with fused_dv, whose dv it does not compute), on the calls that suit
        the Gluon kernels (hopper.suits: sm_90, bf16, ...) with one stored state per 64-token chunk; others take
        the Triton kernel.
    fwd_max_registers, bwd_max_registers: registers per thread the forward (and its segment sweep) / backward
        kernels may use (0: the compiler's choice, up to 255). A lower cap lets more programs share an SM (65536
        registers: two programs of 4 warps at 255, three at 168), at the price of spilling to local memory. It pays
        where the extra room saves a round of programs (e.g. 384 programs: two rounds on 264 slots, one on 396).
    """

    chunk: int
    num_warps: int
    num_stages: int
    fwd_value_block: int = 0
    bwd_chunk: int = 0
    bwd_num_warps: int = 0
    bwd_num_stages: int = 0
    bwd_key_block: int = 0
    bf16_boundaries: bool = False
    chunk_parallel_backward: bool = False
    bwd_value_block: int = 0
    state_stride: int = 0
    spans_per_program: int = 1
    fused_dv: bool = False
    dv_in_sweep: bool = False
    save_states: bool = False
    gate_stride: int = 64
    precise_intra: bool = False
    split_below: int = 0
    target_programs: int = 0
    segment: int = 0
    sweep_chunk: int = 0
    sweep_block: int = 0
    programs_per_sm: int = 4
    split_percent: int = 100
    dv_sweep_num_warps: int = 0
    dv_sweep_num_stages: int = 0
    lone_stages: int = 0
    sms: int = 0
    blocks_adjacent: bool = True
    bf16_dv_partials: bool = False
    hopper_sweeps: bool = False
    hopper_dqk: bool = False
    fwd_max_registers: int = 0
    bwd_max_registers: int = 0

    @functools.cached_property
    def backward(self) -> "LaunchConfig":
        """The config of the backward kernels (cached: every backward call asks, and the copy is validated)."""
        return replace(self, chunk=self.bwd_chunk or self.chunk, num_warps=self.bwd_num_warps or self.num_warps,
                       num_stages=self.bwd_num_stages or self.num_stages)

    def forward_value_block(self, V: int) -> int:
        """Value channels per forward program for V value channels (fwd_value_block, or all of them)."""
        return min(V, self.fwd_value_block or V)

    def stages_for(self, programs: int, stages: int) -> int:
        """Pipeline stages of a sequential kernel of ``programs`` programs whose usual stages are ``stages``:
        lone_stages where the programs leave each SM at most one."""
        return self.lone_stages if self.lone_stages and 0 < programs <= self.sms else stages

    @property
    def state_span(self) -> int:
        """Tokens per state the chunk-parallel backward stores (and the forward saves)."""
        return self.state_stride or self.bwd_chunk or self.chunk

    def __post_init__(self):
        for name in ("chunk", "bwd_chunk"):
            value = getattr(self, name)
            if (value or self.chunk) < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16 (tl.dot needs 16 rows); got {value}")
            if self.gate_stride % (value or self.chunk):
                raise ValueError(f"gate_stride {self.gate_stride} must be a multiple of {name} {value}")
        if self.segment < 0 or self.segment % self.gate_stride:
            raise ValueError(f"segment {self.segment} must be 0 (automatic) or a positive multiple of gate_stride "
                             f"{self.gate_stride}")
        zero_means = dict(fwd_value_block="all channels", bwd_key_block="all channels",
                          bwd_value_block="all channels", sweep_chunk="the chunk", sweep_block="the whole state")
        for name, meaning in zero_means.items():
            value = getattr(self, name)
            if value and (value < 16 or value & (value - 1)):
                raise ValueError(f"{name} must be 0 ({meaning}) or a power of two >= 16; got {value}")
        if self.state_stride:
            chunk = self.bwd_chunk or self.chunk
            if not self.chunk_parallel_backward:
                raise ValueError("state_stride spaces the chunk-parallel backward's stored states: set "
                                 "chunk_parallel_backward=True as well, or drop state_stride")
            if self.state_stride % chunk or self.gate_stride % self.state_stride:
                raise ValueError(f"state_stride {self.state_stride} must be a multiple of the backward chunk {chunk} "
                                 f"and divide gate_stride {self.gate_stride} (segments are cut at gate_stride)")
        if self.spans_per_program < 1:
            raise ValueError(f"spans_per_program must be >= 1; got {self.spans_per_program}")
        if self.spans_per_program > 1 and not self.chunk_parallel_backward:
            raise ValueError("spans_per_program groups the chunk-parallel backward's spans: set "
                             "chunk_parallel_backward=True as well, or drop spans_per_program")
        if self.bwd_num_stages < 0:
            raise ValueError(f"bwd_num_stages must be 0 (as the forward) or >= 1; got {self.bwd_num_stages}")
        if self.fused_dv and not self.chunk_parallel_backward:
            raise ValueError("fused_dv is an option of the chunk-parallel backward: set chunk_parallel_backward=True "
                             "as well, or drop fused_dv")
        if self.dv_in_sweep:
            if not self.chunk_parallel_backward:
                raise ValueError("dv_in_sweep is an option of the chunk-parallel backward: set "
                                 "chunk_parallel_backward=True as well, or drop dv_in_sweep")
            if self.fused_dv:
                raise ValueError("dv_in_sweep and fused_dv both compute dv: choose one")
            if self.state_stride not in (0, self.bwd_chunk or self.chunk):
                raise ValueError(f"dv_in_sweep needs one stored state per chunk; got state_stride "
                                 f"{self.state_stride}: set state_stride=0 or drop dv_in_sweep")
        if self.save_states and not self.chunk_parallel_backward:
            raise ValueError("save_states stores chunk states for the chunk-parallel backward: set "
                             "chunk_parallel_backward=True as well, or drop save_states")
        if self.save_states and self.bwd_chunk not in (0, self.chunk):
            raise ValueError(f"save_states needs one chunk size forward and backward; got chunk {self.chunk}, "
                             f"bwd_chunk {self.bwd_chunk}: set bwd_chunk to {self.chunk} or 0")
        if self.hopper_sweeps and (self.chunk != 64 or self.bwd_chunk not in (0, 64)
                                   or self.state_stride not in (0, 64)):
            raise ValueError(f"hopper_sweeps runs 64-token chunks with one stored state per chunk; got chunk "
                             f"{self.chunk}, bwd_chunk {self.bwd_chunk}, state_stride {self.state_stride}: set them "
                             f"to 64 (or 0), or drop hopper_sweeps")
        if self.hopper_dqk and (self.fused_dv or not self.chunk_parallel_backward):
            raise ValueError(f"hopper_dqk is the chunk-parallel backward's dq/dk kernel, which computes no dv: it "
                             f"needs chunk_parallel_backward=True and fused_dv=False; got chunk_parallel_backward="
                             f"{self.chunk_parallel_backward}, fused_dv={self.fused_dv}: set those, or set "
                             f"hopper_dqk=False")
        for name in ("lone_stages", "sms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: {'not used' if name == 'lone_stages' else 'unknown'}); "
                                 f"got {getattr(self, name)}")
        for name in ("dv_sweep_num_warps", "dv_sweep_num_stages"):
            if getattr(self, name) and not self.dv_in_sweep:
                raise ValueError(f"{name} is an option of the dv_in_sweep kernel: set dv_in_sweep=True as well, or "
                                 f"drop {name} (set it to 0)")
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (the backward's) or >= 1; got {getattr(self, name)}")
        if self.bf16_dv_partials and self.chunk_parallel_backward:
            raise ValueError("bf16_dv_partials is for the two-sweep backward's key blocks; the chunk-parallel "
                             "backward writes no dv partials: drop bf16_dv_partials")
        for name in ("fwd_max_registers", "bwd_max_registers"):
            value = getattr(self, name)
            if value and not 24 <= value <= 255:
                raise ValueError(f"{name} must be 0 (the compiler's choice) or 24..255; got {value}")
        if self.programs_per_sm < 1:
            raise ValueError(f"programs_per_sm must be >= 1; got {self.programs_per_sm}")
        if not 1 <= self.split_percent <= 100:
            raise ValueError(f"split_percent must be 1..100 (set split_below=0 to never split); got "
                             f"{self.split_percent}")
        if self.split_below < 0 or self.target_programs < 0:
            raise ValueError(f"split_below and target_programs must be >= 0; got {self.split_below}, "
                             f"{self.target_programs}")


# (arch major, vector decay, max(K, V) rounded up to 64, 128 or 256) -> config; arch None: unlisted GPUs.
PINNED_CONFIGS: dict[tuple[int | None, bool, int], LaunchConfig] = {
    # H200, bf16 (docs/benchmarks.md, "GPU kernels": the config sweeps). Scalar: a 64-token forward chunk beat 32
    # at all three bench shapes (0.18-0.63 ms fwd); the chunk-parallel backward with forward-saved states took
    # 32-35 % off fwd+bwd against the two sweeps (saving the states: 3-7 % of that), with D128's dq/dk kernel in
    # key blocks of 64 and value blocks of 64 (few spills on 4 warps). Vector: 16-token chunks; the D128 backward in
    # key blocks of 64, D64 in blocks of 32; tf32 intra dots in the backward and a gate restart every 32 tokens
    # keep the bf16 gate gradient under 5e-3 (3.1-3.5e-3 measured); the restart states in bf16 measured as
    # accurate and 5 % faster than fp32. Scalar D128's forward in value blocks of 64 took 3-9 % off fwd+bwd at
    # both D128 shapes; at D64, dv computed in the dq/dk kernel (value blocks of 32) took 6 % off; at D128, dv
    # computed by the reverse state-gradient sweep took 6 % off at B4*T4096*H64 (2.80 -> 2.63 ms; slower at D64,
    # 0.73 -> 0.83). Vector at B4*T2048*H16*D128 (segmented): segment sweeps on 64-token steps took 2 % off;
    # segments are cut to fill 2 programs per SM (two fit, at 255 registers on 4 warps): 4 segments of 512 tokens
    # there, 1.39 ms against 1.52-1.77 for 2, 3, 5 or 7 segments; whole-state sweeps beat 64 x 64 blocks.
    # Vector partial dv in bf16 took 2.6-4.8 % off at the three shapes (dv's error 2.5e-3 -> 3.1e-3). Register caps
    # of 168 (three programs per SM instead of two) where they save a round of programs: the scalar D64 forward
    # (384 programs; 0.205 -> 0.149 ms fwd) and the vector D64 backward (768; 2.87 -> 2.67 ms fwd+bwd); at D128
    # they spill far more and lost everywhere (2-3x slower). The scalar D64 gradient kernel walking 4 chunks per
    # program, its value channels in one block (so that the chunk loop is the innermost loop, which the compiler
    # pipelines): GPU time 0.686 -> 0.607 ms fwd+bwd (value blocks of 64 alone: 0.672; 8 chunks: 0.607). Three
    # pipeline stages in the scalar D128 backward: 2.242 -> 2.208 ms (B4*T4096*H64), 0.411 -> 0.403 (B4*T2048*H16).
    # Scalar sequences are split only while the forward's programs fill < 85 % of the SMs: B4*T2048*H16*D128 (128
    # forward programs on 132 SMs) ran 0.405 ms split against 0.369 whole (GPU time); at 96 programs (73 %, T4096)
    # splitting still won (0.611 against 0.644), at 128 programs of D64 the two tied (0.281 / 0.279). Scalar D128's
    # dv sweep on 2 stages, which leave room for two programs per SM (3 stages of its q and k take ~140 KB):
    # 2.18 -> 2.05 ms fwd+bwd (GPU time) at B4*T4096*H64; its forward and dv sweep on 3 stages where their programs
    # number at most one per SM: 0.340 -> 0.313 at B4*T2048*H16.
    (None, False, 64): LaunchConfig(64, 4, 2, chunk_parallel_backward=True, save_states=True, fused_dv=True,
                                    bwd_value_block=64, spans_per_program=4, fwd_max_registers=168,
                                    split_percent=85),
    (None, False, 128): LaunchConfig(64, 4, 2, chunk_parallel_backward=True, save_states=True, bwd_key_block=64,
                                     bwd_value_block=64, fwd_value_block=64, dv_in_sweep=True, bwd_num_stages=3,
                                     dv_sweep_num_stages=2, lone_stages=3, split_percent=85),
    (None, True, 64): LaunchConfig(16, 4, 2, bwd_key_block=32, precise_intra=True, gate_stride=32,
                                   bf16_boundaries=True, sweep_chunk=64, programs_per_sm=2, bf16_dv_partials=True,
                                   bwd_max_registers=168),
    (None, True, 128): LaunchConfig(16, 4, 2, bwd_key_block=64, precise_intra=True, gate_stride=32,
                                    bf16_boundaries=True, sweep_chunk=64, programs_per_sm=2, bf16_dv_partials=True),
    # Head dims up to 256 (docs/benchmarks.md, "Head dims of 256"): D128's plans in narrower blocks, so that the [K, V]
    # fp32 state blocks and the tiles fit the registers, and the segment sweeps in 64 x 64 state blocks. Scalar: the
    # dv sweep on 4 warps with value blocks of 64 (4.31 ms fwd+bwd at B8*T2048*H32) beat 8 warps (5.44) and blocks of
    # 32 (4.92), on 2 stages (3 take more than sm_90's shared memory in fp16 and fp32). Vector: 4 warps (18.9 ms
    # there) beat 8 (28.6), which spill less but leave one program per SM; still slower than fla (16.6).
    (None, False, 256): LaunchConfig(64, 4, 2, chunk_parallel_backward=True, save_states=True, bwd_key_block=64,
                                     bwd_value_block=64, fwd_value_block=32, dv_in_sweep=True, bwd_num_stages=3,
                                     dv_sweep_num_stages=2, split_percent=85, sweep_block=64),
    (None, True, 256): LaunchConfig(16, 4, 2, fwd_value_block=64, bwd_key_block=32, precise_intra=True,
                                    gate_stride=32, bf16_boundaries=True, sweep_chunk=64, sweep_block=64,
                                    programs_per_sm=1, bf16_dv_partials=True),
}
# Hopper (sm_90): scalar D128's forward and dv sweep as the Gluon kernels of hopper.py (docs/benchmarks.md, "Hopper
# sweeps in Gluon"), which start each next chunk's scores during the state update. GPU time of fwd+bwd: 0.301 ->
# 0.258 ms at B4*T2048*H16 (forward 0.090 -> 0.071, dv sweep 0.088 -> 0.069), 0.448 -> 0.395 at B2*T4096*H16
# (segments), 1.950 -> 1.929 at B4*T4096*H64. A Gluon launch costs ~15 us more host time. At D64 the Gluon forward
# was slower (0.147 -> 0.192 ms), so D64 keeps the Triton kernels. The dq/dk kernel as the persistent Gluon kernel
# of hopper_grads.py ("Hopper kernels in Gluon: dq/dk and TMA stores"): 0.900 -> 0.716 ms at B4*T4096*H64, 0.119
# -> 0.099 at B4*T2048*H16; with every result tile out by TMA, fwd+bwd 1.78 -> 1.54 and 0.239 -> 0.217 ms.
PINNED_CONFIGS[(9, False, 128)] = replace(PINNED_CONFIGS[(None, False, 128)], hopper_sweeps=True, hopper_dqk=True)

_INTERPRETER_CONFIG = LaunchConfig(16, 4, 1)


def interpreter_active() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pick_config(device: torch.device, vector: bool, K: int, V: int) -> LaunchConfig:
    if interpreter_active():
        return _INTERPRETER_CONFIG
    width = next(w for w in (64, 128, 256) if max(K, V) <= w)
    if device.type != "cuda":
        return PINNED_CONFIGS[(None, vector, width)]
    return _gpu_config(device.index if device.index is not None else torch.cuda.current_device(), vector, width)


@functools.lru_cache(maxsize=None)
def _gpu_config(index: int, vector: bool, width: int) -> LaunchConfig:
    """The pinned config for this GPU's architecture and SM count (cached: every layer call asks for it)."""
    major = torch.cuda.get_device_capability(index)[0]
    config = PINNED_CONFIGS.get((major, vector, width)) or PINNED_CONFIGS[(None, vector, width)]
    return fit_to_sms(config, torch.cuda.get_device_properties(index).multi_processor_count)


def fit_to_sms(config: LaunchConfig, sms: int) -> LaunchConfig:
    """``config`` with its segment thresholds set for a GPU of ``sms`` SMs: split while the forward's programs
    fill less than ``split_percent`` % of them, up to ``programs_per_sm`` per SM. ``overridden_config`` applies it
    again when ``programs_per_sm`` or ``split_percent`` is overridden."""
    return replace(config, split_below=sms * config.split_percent // 100,
                   target_programs=config.programs_per_sm * sms, sms=sms)


def overridden_config(device: torch.device, vector: bool, K: int, V: int, overrides: dict) -> LaunchConfig:
    """The pinned config with ``overrides`` (benchmark sweeps, tests). The picked config's segment thresholds were
    set for its own ``programs_per_sm`` and ``split_percent``: an override of either alone has them re-fitted to
    the GPU's SMs."""
    config = replace(pick_config(device, vector, K, V), **overrides)
    refit = {"programs_per_sm", "split_percent"} & overrides.keys()
    if refit and not {"split_below", "target_programs"} & overrides.keys():
        config = fit_to_sms(config, torch.cuda.get_device_properties(device).multi_processor_count)
    return config


_override: list[LaunchConfig] = []


class use_config:
    """Context manager forcing one launch config (benchmark sweeps over chunk size and warps)."""

    def __init__(self, config: LaunchConfig):
        self.config = config

    def __enter__(self) -> LaunchConfig:
        _override.append(self.config)
        return self.config

    def __exit__(self, *exc) -> None:
        _override.pop()


def active_config(device: torch.device, vector: bool, K: int, V: int) -> LaunchConfig:
    return _override[-1] if _override else pick_config(device, vector, K, V)
