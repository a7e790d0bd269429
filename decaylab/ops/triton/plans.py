"""Launch plans of the Triton kernels: how the forward, one of the two backwards, and the sequence splitting run.

A ``LaunchPlan`` holds a ``ForwardPlan``, a backward plan whose type is the backward strategy (``TwoSweepBackward``
or ``ChunkParallelBackward``, the latter with one of three ways to compute dv), and a ``Splitting``. Options that
belong to one strategy exist only on its type, so a plan that mixes strategies cannot be built; each type checks
its own values. The flat knob names that benchmark sweeps and docs use (``bwd_chunk=32``, ``fused_dv=true``) map onto
these types in knobs.py. The pinned plans per GPU are in configs.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


def _power_of_two(name: str, value: int, zero_means: str | None = None) -> None:
    """``value`` must be a power of two >= 16 (tl.dot needs 16 rows), or 0 where ``zero_means`` says what 0 is."""
    if zero_means is not None and value == 0:
        return
    if value < 16 or value & (value - 1):
        zero = f"0 ({zero_means}) or " if zero_means is not None else ""
        raise ValueError(f"{name} must be {zero}a power of two >= 16 (tl.dot needs 16 rows); got {value}")


def _not_negative(name: str, value: int, zero_means: str) -> None:
    if value < 0:
        raise ValueError(f"{name} must be 0 ({zero_means}) or >= 1; got {value}")


def _registers(name: str, value: int) -> None:
    if value and not 24 <= value <= 255:
        raise ValueError(f"{name} must be 0 (the compiler's choice) or 24..255; got {value}")


@dataclass(frozen=True)
class ForwardPlan:
    """The forward kernel: ``chunk`` tokens per step (BT), Triton's ``num_warps`` and ``num_stages``;
    ``value_block`` value channels per program (0: all; blocks halve the [K, V] fp32 state each program holds and
    multiply the programs, each recomputing the chunk's scores); ``max_registers`` per thread (0: the compiler's
    choice; a lower cap lets more programs share an SM, at the price of spills)."""

    chunk: int
    num_warps: int
    num_stages: int
    value_block: int = 0
    max_registers: int = 0

    def __post_init__(self):
        _power_of_two("chunk", self.chunk)
        _power_of_two("fwd_value_block", self.value_block, "all channels")
        _registers("fwd_max_registers", self.max_registers)

    def value_block_for(self, V: int) -> int:
        """Value channels per forward program for V value channels."""
        return min(V, self.value_block or V)


@dataclass(frozen=True)
class _BackwardCommon:
    """The settings every backward strategy has (each strategy's docstring says what they mean for it)."""

    chunk: int = 0
    num_warps: int = 0
    num_stages: int = 0
    max_registers: int = 0
    key_block: int = 0
    gate_stride: int = 64
    precise_intra: bool = False


@dataclass(frozen=True)
class TwoSweepBackward(_BackwardCommon):
    """The backward as two full sweeps (kernels.py): vector decay's, and scalar decay's low-memory option.

    chunk, num_warps, num_stages, max_registers: as the forward's (0: the forward's; registers: the compiler's).
    key_block: key channels per program (0: all); blocks halve the fp32 state in registers and double the programs,
        at the price of summing partial dv (and scalar gate) gradients.
    gate_stride: the fp32 state is saved every this many tokens, and the gate gradient's reverse cumsum restarts
        there from its direct form sum_v S * dS; a multiple of both chunks. Segments are cut at it too.
    bf16_boundaries: those saved states in bf16 instead of fp32.
    bf16_dv_partials: with bf16 inputs and key blocks, the blocks' partial dv in bf16 (half the bytes, one more
        rounding per block).
    precise_intra: for bf16 inputs, vector decay's intra-chunk dots on fp32 (tf32) operands (fp16 and fp32 inputs
        always do); their rounding dominates the bf16 gate-gradient error.
    """

    bf16_boundaries: bool = False
    bf16_dv_partials: bool = False

    def __post_init__(self):
        _check_backward(self)


@dataclass(frozen=True)
class DvKernel:
    """dv by a kernel of its own, one program per (span, head)."""


@dataclass(frozen=True)
class FusedDv:
    """dv by the dq/dk kernel: every input read once, more tiles per program (small heads; needs every key channel
    in one program)."""


@dataclass(frozen=True)
class DvInSweep:
    """dv by the reverse state-gradient sweep (one program per sequence, head and value block, every key at once):
    q, k and do are read once for both, and the state gradients are not read back. Needs one stored state per
    chunk. ``num_warps``, ``num_stages``: that sweep's (0: the backward's); it carries a [K, BV] fp32 state gradient
    and the chunk's q, k and dv tiles, more than the other backward kernels hold, and each stage buffers the
    chunk's q and k in shared memory."""

    num_warps: int = 0
    num_stages: int = 0

    def __post_init__(self):
        _not_negative("dv_sweep_num_warps", self.num_warps, "the backward's")
        _not_negative("dv_sweep_num_stages", self.num_stages, "the backward's")


@dataclass(frozen=True)
class ChunkParallelBackward(_BackwardCommon):
    """Scalar decay's pinned backward (chunk_parallel.py), vector decay's by choice: two lean state sweeps that
    store every chunk's state and state gradient, then one program per (chunk, head).

    chunk, num_warps, num_stages, max_registers, key_block, gate_stride, precise_intra: as TwoSweepBackward's
        (gate_stride here only bounds state_stride and the segments; precise_intra covers vector decay's scores in
        the dv kernels too).
    value_block: value channels per step of the gradient kernels (0: all at once).
    state_stride: tokens per stored state (0: one per chunk); a multiple of the chunk that divides gate_stride.
        Wider strides store fewer states; the gradient kernels rebuild each chunk's from its span's.
    spans_per_program: stored-state spans each program of the dq/dk kernel walks in a loop, which the compiler
        pipelines (the next span's loads issued during this span's math).
    save_states: the forward stores the state entering every span of stored state, so that the backward skips its
        forward sweep (faster, at the price of that memory until the backward). Needs spans that are whole forward
        chunks: a forward of 64-token chunks can feed a backward of 16-token chunks that stores a state per 64 tokens
        (state_stride=64).
    dv: how dv is computed (DvKernel, FusedDv or DvInSweep).
    gluon_dqk: on calls that suit the Gluon kernels (gluon.suits) with one stored state per 64-token chunk, dq, dk
        and the gate gradient by the persistent Gluon kernel (gluon/grads.py); it computes no dv, so not with FusedDv.
        Scalar decay only: a vector-decay call with it is refused (triton_decay_linear_attention).
    """

    value_block: int = 0
    state_stride: int = 0
    spans_per_program: int = 1
    save_states: bool = False
    dv: DvKernel | FusedDv | DvInSweep = field(default_factory=DvKernel)
    gluon_dqk: bool = False

    def __post_init__(self):
        _check_backward(self)
        _power_of_two("bwd_value_block", self.value_block, "all channels")
        if self.state_stride < 0:
            raise ValueError(f"state_stride must be 0 (one state per chunk) or > 0; got {self.state_stride}")
        if self.spans_per_program < 1:
            raise ValueError(f"spans_per_program must be >= 1; got {self.spans_per_program}")
        if self.gluon_dqk and isinstance(self.dv, FusedDv):
            raise ValueError("hopper_dqk is the chunk-parallel backward's dq/dk kernel, which computes no dv: it "
                             "needs chunk_parallel_backward=True and fused_dv=False: set those, or set "
                             "hopper_dqk=False")


def _check_backward(plan: TwoSweepBackward | ChunkParallelBackward) -> None:
    """The checks both backward types share."""
    if plan.chunk:
        _power_of_two("bwd_chunk", plan.chunk)
        if plan.gate_stride % plan.chunk:
            raise ValueError(f"gate_stride {plan.gate_stride} must be a multiple of bwd_chunk {plan.chunk}")
    _not_negative("bwd_num_warps", plan.num_warps, "as the forward")
    _not_negative("bwd_num_stages", plan.num_stages, "as the forward")
    _registers("bwd_max_registers", plan.max_registers)
    _power_of_two("bwd_key_block", plan.key_block, "all channels")


@dataclass(frozen=True)
class Splitting:
    """When sequences are cut into segments (segments.py), so that few long sequences still fill the GPU.

    split_below, target_programs: when the forward's programs (sequences x heads x value blocks) are fewer than
        split_below, the sequences are cut into as many segments as keep (segments x heads) <= target_programs;
        with programs enough, a sequence far longer than an even share of the tokens (segments.IMBALANCE) is still
        cut to that share. 0: never split. ``fitted`` sets both from the GPU's SM count.
    programs_per_sm, split_percent: what ``fitted`` sets them from: split while the programs fill less than
        split_percent % of the SMs, up to programs_per_sm programs per SM.
    segment: a fixed segment length in tokens (a multiple of gate_stride), overriding the above.
    sweep_chunk: tokens per step of the segments' state-only sweeps (0: the forward's chunk); their decay factors
        are <= 1 whatever the chunk, so they can step further than the main kernels.
    sweep_block: rows and columns of the state block one segment-sweep program carries (0: the whole state).
    """

    split_below: int = 0
    target_programs: int = 0
    programs_per_sm: int = 4
    split_percent: int = 100
    segment: int = 0
    sweep_chunk: int = 0
    sweep_block: int = 0

    def __post_init__(self):
        _power_of_two("sweep_chunk", self.sweep_chunk, "the chunk")
        _power_of_two("sweep_block", self.sweep_block, "the whole state")
        if self.programs_per_sm < 1:
            raise ValueError(f"programs_per_sm must be >= 1; got {self.programs_per_sm}")
        if not 1 <= self.split_percent <= 100:
            raise ValueError(f"split_percent must be 1..100 (set split_below=0 to never split); got "
                             f"{self.split_percent}")
        if self.split_below < 0 or self.target_programs < 0:
            raise ValueError(f"split_below and target_programs must be >= 0; got {self.split_below}, "
                             f"{self.target_programs}")

    def fitted(self, sms: int) -> Splitting:
        """The thresholds for a GPU of ``sms`` SMs."""
        return replace(self, split_below=sms * self.split_percent // 100, target_programs=self.programs_per_sm * sms)


@dataclass(frozen=True)
class LaunchPlan:
    """How one call's kernels are launched.

    forward, backward, splitting: the parts above; the backward's type is its strategy.
    gluon_sweeps: the scalar forward and the dv sweep (DvInSweep) as the Gluon kernels of gluon/sweeps.py, which
        start each next chunk's scores while this chunk's state update runs (sm_90, on the calls gluon.suits
        accepts: 64-token chunks, one stored state per chunk, value blocks of 64; other calls take the Triton
        kernels).
    lone_stages: pipeline stages of the forward and of the dv sweep when their programs number at most one per SM
        (0: their usual stages): with one program per SM there is no second one whose shared memory a deeper
        pipeline would crowd out.
    sms: the GPU's SM count (set by ``fitted``; 0: unknown, and lone_stages is not applied).
    blocks_adjacent: launch the key or value blocks of one owner next to each other, so that the tiles they share
        come from HBM once, then from L2 (blocks.program_ids); False: a 2-D grid.
    exact_intra: build vector decay's kernels with the exact element-wise intra-chunk path that chunks decaying
        more than SPAN_LIMIT take (intra.py). False drops it, to time what it costs: such chunks then come out inf
        or NaN, so a plan without it is for benchmarks on bounded decays, never for training.
    """

    forward: ForwardPlan
    backward: TwoSweepBackward | ChunkParallelBackward = field(default_factory=TwoSweepBackward)
    splitting: Splitting = field(default_factory=Splitting)
    gluon_sweeps: bool = False
    lone_stages: int = 0
    sms: int = 0
    blocks_adjacent: bool = True
    exact_intra: bool = True

    def __post_init__(self):
        gate_stride = self.backward.gate_stride
        if gate_stride % self.forward.chunk:
            raise ValueError(f"gate_stride {gate_stride} must be a multiple of chunk {self.forward.chunk}")
        if self.splitting.segment < 0 or self.splitting.segment % gate_stride:
            raise ValueError(f"segment {self.splitting.segment} must be 0 (automatic) or a positive multiple of "
                             f"gate_stride {gate_stride}")
        backward = self.backward
        if isinstance(backward, ChunkParallelBackward) and backward.save_states and \
                self.state_span % self.forward.chunk:
            # the forward stores the state entering every state_span / chunk-th chunk of its own
            raise ValueError(f"save_states needs the stored states' span (state_stride, or else bwd_chunk) to be a "
                             f"multiple of the forward chunk; got chunk {self.forward.chunk}, bwd_chunk "
                             f"{backward.chunk}, state_stride {backward.state_stride}: set bwd_chunk to "
                             f"{self.forward.chunk} or 0, or state_stride to a multiple of {self.forward.chunk}")
        if isinstance(backward, ChunkParallelBackward):
            stride, chunk = backward.state_stride, self.backward_chunk
            if stride and (stride % chunk or gate_stride % stride):  # the stride is checked here: it needs the chunk
                raise ValueError(f"state_stride {stride} must be a multiple of the backward chunk {chunk} and divide "
                                 f"gate_stride {gate_stride} (segments are cut at gate_stride)")
            if isinstance(backward.dv, DvInSweep) and self.state_span != self.backward_chunk:
                raise ValueError(f"dv_in_sweep needs one stored state per chunk; got state_stride "
                                 f"{backward.state_stride}: set state_stride=0 or drop dv_in_sweep")
        if self.gluon_sweeps and (self.forward.chunk != 64 or self.backward_chunk != 64 or self.state_span != 64):
            raise ValueError(f"hopper_sweeps runs 64-token chunks with one stored state per chunk; got chunk "
                             f"{self.forward.chunk}, bwd_chunk {backward.chunk}, state span {self.state_span}: set "
                             f"them to 64 (or 0), or drop hopper_sweeps")
        for name, meaning in (("lone_stages", "not used"), ("sms", "unknown")):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: {meaning}); got {getattr(self, name)}")

    @property
    def backward_chunk(self) -> int:
        return self.backward.chunk or self.forward.chunk

    @property
    def backward_num_warps(self) -> int:
        return self.backward.num_warps or self.forward.num_warps

    @property
    def backward_num_stages(self) -> int:
        return self.backward.num_stages or self.forward.num_stages

    @property
    def state_span(self) -> int:
        """Tokens per state the chunk-parallel backward stores (and the forward saves)."""
        stride = self.backward.state_stride if isinstance(self.backward, ChunkParallelBackward) else 0
        return stride or self.backward_chunk

    @property
    def saves_states(self) -> bool:
        """Whether the forward stores the chunk states for the backward."""
        return isinstance(self.backward, ChunkParallelBackward) and self.backward.save_states

    def stages_for(self, programs: int, stages: int) -> int:
        """Pipeline stages of a sequential kernel of ``programs`` programs whose usual stages are ``stages``:
        lone_stages where the programs leave each SM at most one."""
        return self.lone_stages if self.lone_stages and 0 < programs <= self.sms else stages

    def fitted(self, sms: int) -> LaunchPlan:
        """This plan with its segment thresholds set for a GPU of ``sms`` SMs."""
        return replace(self, splitting=self.splitting.fitted(sms), sms=sms)
