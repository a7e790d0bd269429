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
