"""Host-side planning of sequence segments and launch-config validation (no kernel launch, no GPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from decaylab.ops.triton import LaunchConfig  # noqa: E402
from decaylab.ops.triton.segments import plan_segments, segment_length  # noqa: E402


def test_plan_cuts_each_sequence_and_keeps_empty_ones():
    plan = plan_segments((150, 0, 64, 65), 64, torch.device("cpu"))
    assert plan.lengths == (64, 64, 22, 0, 64, 64, 1)
    assert plan.cu_seqlens.tolist() == [0, 64, 128, 150, 150, 214, 278, 279]
    assert plan.first.tolist() == [0, 3, 4, 5, 7]
    assert plan.count == 7


@pytest.mark.parametrize(
    "lengths, heads, split_below, target, expected",
    [
        ([2048] * 4, 16, 132, 256, 512),  # 64 programs -> 4 segments per sequence
        ([2048] * 4, 16, 132, 300, 512),  # 300 // 64 = 4 pieces: a fifth would start a second round
        ([2048] * 4, 16, 132, 320, 448),  # 5 pieces of 409.6 tokens, rounded up to the stride
        ([2048] * 4, 16, 132, 127, 0),  # one piece: left whole
        ([4096] * 4, 64, 132, 528, 0),  # 256 programs: every SM is busy already
        ([100] * 2, 1, 132, 64, 64),  # never shorter than the stride
        ([64] * 2, 1, 132, 64, 0),  # too short to cut
        ([], 4, 132, 64, 0),
        ([4096] * 4, 16, 0, 528, 0),  # splitting switched off
        ([8192] + [80] * 100, 16, 132, 528, 512),  # one long document among short ones: cut to an even share
        ([8192] + [80] * 100, 16, 0, 528, 0),  # ... unless splitting is off
        ([2048] * 8, 64, 132, 528, 0),  # equal lengths with programs enough: never cut
        ([1000, 200] * 40, 4, 132, 528, 0),  # uneven, but within IMBALANCE shares (a share is 364 tokens)
    ],
)
def test_segment_length_fills_the_program_target(lengths, heads, split_below, target, expected):
    assert segment_length(tuple(lengths), heads, split_below, target, 64) == expected


def test_the_split_counts_the_forwards_value_blocks():
    # 64 (sequence, head) pairs: below 112 programs when the forward runs one value block each, not with two
    assert segment_length((2048,) * 4, 16, 112, 528, 64, blocks=1) == 256
    assert segment_length((2048,) * 4, 16, 112, 528, 64, blocks=2) == 0
    # the pieces still fill target_programs in (segment, head) programs
    assert segment_length((4096,) * 2, 16, 112, 528, 64, blocks=2) == 256


@pytest.mark.parametrize(
    "shape, split",
    [
        ((4, 2048, 16, 128), False),  # 128 forward programs on 132 SMs: whole (0.369 ms against 0.405 split)
        ((2, 4096, 24, 128), True),  # 96: split (0.611 against 0.644 whole)
        ((1, 8192, 16, 128), True),  # 32: split (0.739 against 1.000)
        ((8, 2048, 16, 64), False),  # 128 at D64: whole (a tie, 0.279 / 0.281)
        ((4, 2048, 16, 64), True),  # 64 at D64: split (0.180 against 0.208)
    ],
)
def test_pinned_scalar_configs_split_only_while_the_forward_leaves_sms_idle(shape, split):
    """The H200 timings (GPU time, docs/benchmarks-log.md) behind split_percent=85 for scalar decay, on 132 SMs."""
    from decaylab.ops.triton.configs import PINNED_CONFIGS, fit_to_sms

    B, T, H, D = shape
    cfg = fit_to_sms(PINNED_CONFIGS[(None, False, D)], 132)
    blocks = D // cfg.forward.value_block_for(D)
    split_below, target_programs = cfg.splitting.split_below, cfg.splitting.target_programs
    assert (segment_length((T,) * B, H, split_below, target_programs, cfg.backward.gate_stride, blocks) > 0) == split
    vector = fit_to_sms(PINNED_CONFIGS[(None, True, D)], 132)  # vector decay splits below one program per SM
    assert vector.splitting.split_below == 132


@pytest.mark.parametrize(
    "shape, forward_stages, sweep_stages",
    [
        ((4, 4096, 64, 128), 2, 2),  # 512 forward and 512 sweep programs: two share each SM
        ((4, 2048, 16, 128), 3, 3),  # 128 of each on 132 SMs: one per SM, deeper pipelines
        ((2, 4096, 16, 128), 2, 3),  # forward split into segments (> 132 programs), sweep on 64 whole sequences
    ],
)
def test_pinned_scalar_d128_deepens_pipelines_only_with_one_program_per_sm(shape, forward_stages, sweep_stages):
    """lone_stages applies where a sequential kernel's programs leave each SM at most one (132 SMs here)."""
    from decaylab.ops.triton.configs import PINNED_CONFIGS, fit_to_sms

    B, T, H, D = shape
    cfg = fit_to_sms(PINNED_CONFIGS[(None, False, D)], 132)
    assert cfg.sms == 132
    blocks = D // cfg.forward.value_block_for(D)
    segment = segment_length((T,) * B, H, cfg.splitting.split_below, cfg.splitting.target_programs,
                             cfg.backward.gate_stride, blocks)
    segments = -(-T // segment) if segment else 1
    assert cfg.stages_for(B * segments * H * blocks, cfg.forward.num_stages) == forward_stages
    sweep_blocks = D // cfg.backward.value_block
    assert cfg.stages_for(B * H * sweep_blocks, cfg.backward.dv.num_stages) == sweep_stages
    unknown = PINNED_CONFIGS[(None, False, D)]  # no SM count (CPU, interpreter): the usual stages
    assert unknown.stages_for(1, unknown.forward.num_stages) == unknown.forward.num_stages


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(chunk=24), "power of two"),
        (dict(chunk=8), "power of two"),
        (dict(chunk=128), "multiple of chunk"),
        (dict(segment=100), "multiple of gate_stride"),
        (dict(split_below=-1), "split_below"),
        (dict(bwd_chunk=24), "bwd_chunk must be a power of two"),
        (dict(bwd_chunk=128), "multiple of bwd_chunk"),
        (dict(bwd_key_block=48), "bwd_key_block"),
        (dict(bwd_value_block=8), "bwd_value_block"),
        (dict(fwd_value_block=24), "fwd_value_block"),
        (dict(sweep_chunk=24), r"sweep_chunk must be 0 \(the chunk\) or a power of two"),
        (dict(sweep_block=8), "sweep_block"),
        (dict(programs_per_sm=0), "programs_per_sm must be >= 1"),
        (dict(split_percent=0), "split_percent must be 1..100"),
        (dict(fused_dv=True), "fused_dv is an option of the chunk-parallel backward"),
        (dict(spans_per_program=2), "set chunk_parallel_backward=True as well, or drop spans_per_program"),
        (dict(spans_per_program=0, chunk_parallel_backward=True), "spans_per_program must be >= 1"),
        (dict(bwd_num_stages=-1), "bwd_num_stages must be 0"),
        (dict(state_stride=32), "set chunk_parallel_backward=True as well, or drop state_stride"),
        (dict(state_stride=24, chunk_parallel_backward=True), "multiple of the backward chunk 16"),
        (dict(state_stride=128, chunk_parallel_backward=True), "divide gate_stride 64"),
        (dict(save_states=True), "chunk_parallel_backward=True as well"),
        (dict(dv_in_sweep=True), "dv_in_sweep is an option of the chunk-parallel backward"),
        (dict(dv_in_sweep=True, fused_dv=True, chunk_parallel_backward=True), "choose one"),
        (dict(dv_in_sweep=True, chunk_parallel_backward=True, state_stride=32, gate_stride=64),
         "set state_stride=0 or drop dv_in_sweep"),
        (dict(save_states=True, chunk_parallel_backward=True, chunk=32, bwd_chunk=16), "set bwd_chunk to 32 or 0"),
        (dict(dv_sweep_num_warps=8, chunk_parallel_backward=True), "set dv_in_sweep=True as well"),
        (dict(dv_sweep_num_stages=2, chunk_parallel_backward=True), "drop dv_sweep_num_stages"),
        (dict(dv_sweep_num_stages=-1, chunk_parallel_backward=True, dv_in_sweep=True),
         "dv_sweep_num_stages must be 0"),
        (dict(lone_stages=-1), "lone_stages must be >= 0"),
        (dict(sms=-2), "sms must be >= 0"),
        (dict(bf16_dv_partials=True, chunk_parallel_backward=True), "drop bf16_dv_partials"),
        (dict(fwd_max_registers=300), "fwd_max_registers must be 0"),
        (dict(bwd_max_registers=8), "bwd_max_registers must be 0 .* or 24..255"),
    ],
)
def test_bad_launch_configs_are_refused(kwargs, message):
    base = dict(chunk=16, num_warps=4, num_stages=1)
    with pytest.raises(ValueError, match=message):
        LaunchConfig(**{**base, **kwargs})
