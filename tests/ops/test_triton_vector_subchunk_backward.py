"""The vector chunk-parallel backward in sub-chunks (bwd_subchunk; ops/triton/subchunk_backward.py) under
TRITON_INTERPRET=1 on CPU: forward, final state and every gradient against the fp64 recurrence.

As in test_triton_vector_subchunk.py, the cases run in one child process built by decaylab.ops.triton.check. The
backward walks 64-token chunks (also 128) in sub-chunks of 16 (also 32), mostly on the states a forward of the same
chunks saved: the plan chunk=64, fwd_subchunk=16, bwd_subchunk=16, save_states. T off both grids, K != V, an
initial state and a final-state gradient in every case, packed sequences (a short and an empty one), segments,
every dv variant (its own kernel, fused_dv, dv_in_sweep), key and value blocks, wider stored-state spans walked
several per program. Log decays down to -4 make 64-token chunks decay far past SPAN_LIMIT while each 16-token
sub-chunk stays within it (the child measures both on the gates it builds), so the sub-chunked dots carry them; hard
resets (log decay -1e3) send their sub-chunks' diagonal blocks down the element-wise path. The child records each
gradient kernel's chunk and sub-chunk, so that a case passes only on the sub-chunked kernels. bf16 runs on a GPU only
(tests/ops/test_triton_gpu.py, ``-k vector_subchunk_backward``).
"""

from __future__ import annotations

import pytest

from tests.ops.helpers import assert_errors_within, run_under_interpreter
from tests.ops.test_triton_vector_subchunk import SCRIPT as FORWARD_SCRIPT, SPAN_LIMIT

# forward and backward on the same 64-token chunks, the states saved by the forward (the plan this is built for)
PLAN = dict(chunk=64, fwd_subchunk=16, bwd_subchunk=16, gate_stride=64, num_warps=8, fwd_value_block=64,
            chunk_parallel_backward=True, save_states=True)
OWN = dict(PLAN, save_states=False)  # the backward's own state sweep
# name -> (B, T, H, K, V, dtype, most negative log decay, varlen offsets, fraction of hard resets, launch-plan
# overrides of the interpreter's plan)
CASES = {
    "B2-T70-H2-K32-V16-fp32": (2, 70, 2, 32, 16, "float32", -1.0, None, 0.0, PLAN),
    "B1-T75-H2-K16-V32-fp16": (1, 75, 2, 16, 32, "float16", -1.0, None, 0.0, PLAN),
    "varlen-T100-H1-K32-V16-fp32": (1, 100, 1, 32, 16, "float32", -1.0, [0, 5, 5, 70, 100], 0.0, PLAN),
    # 16-token sub-chunks within SPAN_LIMIT, 64-token chunks far past it (checked below on the gates built)
    "spans-B1-T150-H2-K16-V16-fp32": (1, 150, 2, 16, 16, "float32", -4.0, None, 0.0, PLAN),
    "spans-fused-varlen-T150-H1-K32-V16-fp16": (1, 150, 1, 32, 16, "float16", -4.0, [0, 3, 150], 0.0,
                                                dict(PLAN, fused_dv=True)),
    "spans-dvsweep-B1-T130-H1-K16-V32-fp32": (1, 130, 1, 16, 32, "float32", -4.0, None, 0.0,
                                              dict(PLAN, dv_in_sweep=True, bwd_value_block=16)),
    "spans-blocks16-B1-T100-H1-K32-V32-fp32": (1, 100, 1, 32, 32, "float32", -4.0, None, 0.0,
                                               dict(OWN, bwd_key_block=16, bwd_value_block=16)),
    # two 64-token chunks per stored state, two spans per program; 128-token chunks in 16 and 32-token sub-chunks
    "stride128-spans2-varlen-T300-H1-K16-V16-fp32": (1, 300, 1, 16, 16, "float32", -2.0, [0, 130, 300], 0.0,
                                                     dict(PLAN, gate_stride=128, state_stride=128,
                                                          spans_per_program=2)),
    "bwdchunk128-B1-T140-H1-K16-V16-fp32": (1, 140, 1, 16, 16, "float32", -2.0, None, 0.0,
                                            dict(PLAN, bwd_chunk=128, gate_stride=128)),
    "sub32-B1-T80-H1-K16-V16-fp16": (1, 80, 1, 16, 16, "float16", -1.0, None, 0.0, dict(PLAN, bwd_subchunk=32)),
    # a forward of 16-token chunks, not sub-chunked, before a backward of 64-token ones
    "fwd16-B1-T90-H1-K16-V16-fp32": (1, 90, 1, 16, 16, "float32", -2.0, None, 0.0,
                                     dict(OWN, chunk=16, fwd_subchunk=0, bwd_chunk=64)),
    "segments-B1-T200-H1-K16-V32-fp32": (1, 200, 1, 16, 32, "float32", -2.0, None, 0.0, dict(PLAN, segment=64)),
    # hard resets (-1e3) in 5 % of the (token, head, channel) log decays, the rest ordinary
    "resets-B1-T90-H1-K16-V32-fp32": (1, 90, 1, 16, 32, "float32", -0.5, None, 0.05, PLAN),
    "resets-fused-K64-B1-T70-H1-V16-fp16": (1, 70, 1, 64, 16, "float16", -0.5, None, 0.05,
                                            dict(PLAN, fused_dv=True)),
    "resets-dvsweep-own-sweep-B1-T80-H1-K32-V16-fp32": (1, 80, 1, 32, 16, "float32", -0.5, None, 0.05,
                                                         dict(OWN, dv_in_sweep=True)),
    "resets-kblock16-B1-T70-H1-K32-V16-fp32": (1, 70, 1, 32, 16, "float32", -0.5, None, 0.05,
                                               dict(PLAN, bwd_key_block=16)),
    # every log decay anywhere in [-1e3, 0]
    "decay1000-B1-T70-H1-K32-V16-fp32": (1, 70, 1, 32, 16, "float32", -1000.0, None, 0.0, PLAN),
}


def _edited(script: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert old in script, f"the forward test's child changed: {old!r} is gone"
        script = script.replace(old, new)
    return script


# The forward test's child, with the gradient kernels' launches recorded ((kernel, BT, SUBCHUNK) of each) and the
# spans measured on the backward's chunks and sub-chunks.
SCRIPT = """
from decaylab.ops.triton import chunk_parallel
gradient_launches = []


class Recorded:
    def __init__(self, name, kernel):
        self.name, self.kernel = name, kernel

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            gradient_launches.append([self.name, kwargs["BT"], kwargs["SUBCHUNK"]])
            return self.kernel[grid](*args, **kwargs)
        return launch


for kernel in ("chunk_dqk_kernel", "chunk_dv_kernel", "chunk_dstates_dv_kernel"):
    setattr(chunk_parallel, kernel, Recorded(kernel, getattr(chunk_parallel, kernel)))
""" + _edited(FORWARD_SCRIPT, [
    ("    del forwards[:]\n", "    del forwards[:]\n    del gradient_launches[:]\n"),
    ('decays(log_decay, overrides["chunk"], offsets, True)',
     'decays(log_decay, overrides.get("bwd_chunk") or overrides["chunk"], offsets, True)'),
    ('decays(log_decay, overrides["fwd_subchunk"], offsets, False)',
     'decays(log_decay, overrides["bwd_subchunk"], offsets, False)'),
    ("dict(errors, forwards=forwards, spans=spans)", "dict(errors, forwards=forwards, spans=spans, "
                                                     "launches=gradient_launches)"),
])


@pytest.fixture(scope="module")
def results() -> dict:
    return run_under_interpreter(SCRIPT, CASES)


def _expected_launches(overrides: dict) -> list:
    chunk = overrides.get("bwd_chunk") or overrides["chunk"]
    span = overrides.get("state_stride") or chunk
    dv = "chunk_dstates_dv_kernel" if overrides.get("dv_in_sweep") else None if overrides.get("fused_dv") else \
        "chunk_dv_kernel"
    launches = [[dv, span if dv == "chunk_dstates_dv_kernel" else chunk, overrides["bwd_subchunk"]]] if dv else []
    return sorted(launches + [["chunk_dqk_kernel", chunk, overrides["bwd_subchunk"]]])


@pytest.mark.parametrize("name", list(CASES))
def test_vector_subchunk_backward_matches_recurrence_under_interpreter(results, name):
    dtype, lowest, resets, overrides = CASES[name][5], CASES[name][6], CASES[name][8], CASES[name][9]
    found = dict(results[name])
    forwards, launches = found.pop("forwards"), found.pop("launches")
    found.pop("spans")
    assert forwards and all(f == [overrides["chunk"], overrides["fwd_subchunk"]] for f in forwards), forwards
    assert sorted(launches) == _expected_launches(overrides), launches  # the sub-chunked gradient kernels ran
    assert set(found) == {"o", "final_state", "dq", "dk", "dv", "dlog_decay", "dh0"}
    assert_errors_within(name, found, dtype, lowest, resets)


@pytest.mark.parametrize("name", [name for name in CASES if name.startswith("spans")])
def test_the_span_cases_exercise_sub_chunks_not_the_fallback(results, name):
    """The gates built for these cases: every 16-token sub-chunk's decay within SPAN_LIMIT (the sub-chunked dots
    carry the whole backward chunk), the 64-token chunks' far past it (a backward without sub-chunks would take
    intra.py's element-wise path)."""
    sub_max, chunk_max, chunk_median = results[name]["spans"]
    assert sub_max <= SPAN_LIMIT, f"{name}: a sub-chunk decays {sub_max:.1f} log2 units, past SPAN_LIMIT"
    assert chunk_median > 1.5 * SPAN_LIMIT and chunk_max > 2 * SPAN_LIMIT, (name, chunk_median, chunk_max)
