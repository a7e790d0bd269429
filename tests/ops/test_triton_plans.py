"""Launch plans (decaylab.ops.triton.plans) and their flat knobs (knobs.py): what can be built, and the round trip."""

from __future__ import annotations

import pytest

pytest.importorskip("triton", reason="triton is not installed")
from decaylab.ops.triton import launch_plan, with_knobs  # noqa: E402
from decaylab.ops.triton.configs import PINNED_CONFIGS  # noqa: E402
from decaylab.ops.triton.knobs import KNOBS, knobs_of  # noqa: E402
from decaylab.ops.triton.plans import (  # noqa: E402
    ChunkParallelBackward,
    DvInSweep,
    DvKernel,
    FusedDv,
    TwoSweepBackward,
)


@pytest.mark.parametrize("key", list(PINNED_CONFIGS), ids=str)
def test_every_pinned_plan_is_spelled_by_its_knobs(key):
    plan = PINNED_CONFIGS[key]
    knobs = knobs_of(plan)
    assert set(knobs) == set(KNOBS)
    assert launch_plan(**knobs) == plan
    assert all(isinstance(value, KNOBS[name]) for name, value in knobs.items()), knobs


@pytest.mark.parametrize("kind, options", [
    (TwoSweepBackward, dict(save_states=True)),  # the chunk-parallel backward's
    (TwoSweepBackward, dict(dv=FusedDv())),
    (ChunkParallelBackward, dict(bf16_dv_partials=True)),  # the two-sweep backward's key-block partials
    (DvInSweep, dict(gluon_dqk=True)),
])
def test_an_option_exists_only_on_the_plan_that_uses_it(kind, options):
    with pytest.raises(TypeError):
        kind(**options)


def test_the_knobs_choose_the_backward_and_its_dv_by_type():
    base = dict(chunk=16, num_warps=4, num_stages=1)
    assert isinstance(launch_plan(**base).backward, TwoSweepBackward)
    dvs = {(False, False): DvKernel, (True, False): FusedDv, (False, True): DvInSweep}
    for (fused, in_sweep), kind in dvs.items():
        plan = launch_plan(**base, chunk_parallel_backward=True, fused_dv=fused, dv_in_sweep=in_sweep)
        assert isinstance(plan.backward, ChunkParallelBackward) and isinstance(plan.backward.dv, kind)


def test_an_override_that_changes_the_strategy_drops_the_old_strategys_options():
    pinned = PINNED_CONFIGS[(None, False, 128)]  # chunk-parallel, saved states, dv in the sweep
    plan = with_knobs(pinned, chunk_parallel_backward=False)
    assert plan.backward == TwoSweepBackward(num_stages=3, key_block=64)  # the options both backwards share stay
    assert (plan.forward, plan.splitting) == (pinned.forward, pinned.splitting)
    plan = with_knobs(pinned, dv_in_sweep=False)
    assert isinstance(plan.backward.dv, DvKernel) and plan.backward.save_states
    plan = with_knobs(pinned, fused_dv=True, bwd_key_block=0)
    assert plan.backward.dv == FusedDv() and plan.backward.save_states


def test_an_override_on_a_part_the_plan_lacks_is_refused():
    vector = PINNED_CONFIGS[(None, True, 128)]
    with pytest.raises(ValueError, match="set chunk_parallel_backward=True as well, or drop save_states"):
        with_knobs(vector, save_states=True)
    with pytest.raises(ValueError, match="unknown launch knobs chunks"):
        with_knobs(vector, chunks=32)


def test_vector_plans_switch_to_the_chunk_parallel_backward_keeping_the_shared_options():
    """The pinned vector plans stay two-sweep; the knob that selects the chunk-parallel backward keeps the options
    both backwards share (key blocks, gate stride, precise_intra) and drops the two-sweep ones."""
    pinned = PINNED_CONFIGS[(None, True, 128)]
    assert isinstance(pinned.backward, TwoSweepBackward)
    plan = with_knobs(pinned, chunk_parallel_backward=True)
    assert plan.backward == ChunkParallelBackward(key_block=64, gate_stride=32, precise_intra=True)
    plan = with_knobs(pinned, chunk_parallel_backward=True, fused_dv=True, bwd_key_block=0, save_states=True)
    assert plan.backward.dv == FusedDv() and plan.backward.save_states and plan.backward.key_block == 0
    plan = with_knobs(pinned, chunk_parallel_backward=True, dv_in_sweep=True, bwd_value_block=64)
    assert plan.backward.dv == DvInSweep() and plan.backward.value_block == 64


def test_the_sub_chunked_vector_forward_is_a_forward_knob():
    """fwd_subchunk sets ForwardPlan.subchunk (no pinned plan has it yet); the chunk-parallel backward can take the
    states such a forward saves, one per span of whole forward chunks."""
    assert all(plan.forward.subchunk == 0 for plan in PINNED_CONFIGS.values())
    plan = with_knobs(PINNED_CONFIGS[(None, True, 128)], chunk=64, fwd_subchunk=16, bwd_chunk=16, gate_stride=64)
    assert (plan.forward.chunk, plan.forward.subchunk, plan.backward_chunk) == (64, 16, 16)
    assert knobs_of(plan)["fwd_subchunk"] == 16 and launch_plan(**knobs_of(plan)) == plan
    plan = with_knobs(plan, chunk_parallel_backward=True, save_states=True, state_stride=64)
    assert plan.saves_states and plan.state_span == 64 and plan.backward_chunk == 16


@pytest.mark.parametrize("knobs, message", [
    (dict(chunk=64, fwd_subchunk=24), r"fwd_subchunk must be 0 \(off\) or a power of two >= 16"),
    (dict(chunk=64, fwd_subchunk=8), r"fwd_subchunk must be 0 \(off\) or a power of two >= 16"),
    (dict(chunk=16, fwd_subchunk=32), "fwd_subchunk 32 must divide the chunk 16: set chunk to a multiple of it"),
    # saved states: one per span of whole forward chunks
    (dict(chunk=64, fwd_subchunk=16, bwd_chunk=16, chunk_parallel_backward=True, save_states=True),
     "set bwd_chunk to 64 or 0, or state_stride to a multiple of 64"),
])
def test_bad_sub_chunked_forward_plans_are_refused(knobs, message):
    with pytest.raises(ValueError, match=message):
        launch_plan(**dict(dict(num_warps=4, num_stages=1), **knobs))


def test_a_sub_chunked_forward_over_the_pinned_vector_plans_needs_their_gate_stride_raised():
    """The pinned vector plans restart the gate gradient every 32 tokens, which 64-token forward chunks must
    divide: the refusal names the gate stride."""
    with pytest.raises(ValueError, match="gate_stride 32 must be a multiple of chunk 64"):
        with_knobs(PINNED_CONFIGS[(None, True, 64)], chunk=64, fwd_subchunk=16, bwd_chunk=16)


def test_the_sub_chunked_vector_backward_is_a_chunk_parallel_knob():
    """bwd_subchunk sets ChunkParallelBackward.subchunk (no pinned plan has it); with a sub-chunked forward of the
    same chunks, the backward walks them on the states the forward saved."""
    assert all(getattr(plan.backward, "subchunk", 0) == 0 for plan in PINNED_CONFIGS.values())
    plan = launch_plan(chunk=64, num_warps=8, num_stages=1, fwd_subchunk=16, bwd_subchunk=16, gate_stride=64,
                       fwd_value_block=64, chunk_parallel_backward=True, save_states=True)
    assert isinstance(plan.backward, ChunkParallelBackward) and plan.backward.subchunk == 16
    assert (plan.backward_chunk, plan.state_span, plan.saves_states) == (64, 64, True)
    assert knobs_of(plan)["bwd_subchunk"] == 16 and launch_plan(**knobs_of(plan)) == plan
    assert with_knobs(plan, bwd_subchunk=32).backward.subchunk == 32
    # dropping the chunk-parallel backward drops its sub-chunks with it
    assert isinstance(with_knobs(plan, chunk_parallel_backward=False, save_states=False).backward, TwoSweepBackward)


SUB_CP = dict(chunk=64, fwd_subchunk=16, gate_stride=64, chunk_parallel_backward=True)


@pytest.mark.parametrize("knobs, message", [
    (dict(SUB_CP, bwd_subchunk=24), r"bwd_subchunk must be 0 \(off\) or a power of two >= 16"),
    (dict(SUB_CP, bwd_subchunk=8), r"bwd_subchunk must be 0 \(off\) or a power of two >= 16"),
    (dict(SUB_CP, bwd_chunk=16, bwd_subchunk=32), "bwd_subchunk 32 must divide bwd_chunk 16: set bwd_chunk to a "
                                                  "multiple of it"),
    # the backward chunk is the forward's when bwd_chunk is 0
    (dict(chunk=16, bwd_subchunk=32, chunk_parallel_backward=True),
     "bwd_subchunk 32 must divide the backward chunk 16: set bwd_chunk"),
    # the two-sweep backward has no sub-chunks
    (dict(chunk=64, gate_stride=64, bwd_subchunk=16), "bwd_subchunk is an option of the chunk-parallel backward: set "
                                                      "chunk_parallel_backward=True"),
    # hopper_dqk is scalar decay's, bwd_subchunk vector decay's
    (dict(SUB_CP, bwd_subchunk=16, hopper_dqk=True), "set hopper_dqk=False \\(vector decay\\) or bwd_subchunk=0"),
])
def test_bad_sub_chunked_backward_plans_are_refused(knobs, message):
    with pytest.raises(ValueError, match=message):
        launch_plan(**dict(dict(num_warps=4, num_stages=1), **knobs))
