"""The chunk-parallel backward under vector decay (chunk_parallel.py, chunk_parallel_vector.py), under
TRITON_INTERPRET=1 on CPU: forward, final state and every gradient against the fp64 recurrence.

As in test_triton_interpret.py, the cases run in one child process (the interpreter must be on before triton is
imported) built by decaylab.ops.triton.check. Every dv variant (its own kernel, fused into the dq/dk kernel, in the
reverse sweep), key and value blocks, stored states per span of chunks, forward-saved states, packed sequences,
segments, K != V, T off the chunk grid, and hard resets (log decay -1e3) among ordinary decays, which send the
chunks holding them down intra.py's exact element-wise path. bf16 is not tested here (the interpreter's bf16 dot is
broken): tests/ops/test_triton_gpu.py covers it on a GPU.
"""

from __future__ import annotations

import pytest

from tests.ops.helpers import assert_errors_within, run_under_interpreter

CP = dict(chunk_parallel_backward=True)
# name -> (B, T, H, K, V, dtype, with initial state, most negative log decay, varlen offsets, fraction of hard
# resets, launch-plan overrides of the interpreter's plan: 16-token chunks)
CASES = {
    "blocks16-B2-T37-H2-K32-V16-fp32-h0": (2, 37, 2, 32, 16, "float32", True, -1.0, None, 0.0,
                                           dict(CP, bwd_key_block=16, bwd_value_block=16)),
    "fused-spans3-saved-B1-T70-H2-K16-V32-fp32-h0": (1, 70, 2, 16, 32, "float32", True, -2.0, None, 0.0,
                                                     dict(CP, fused_dv=True, save_states=True, spans_per_program=3,
                                                          bwd_value_block=16)),
    "dvsweep-varlen-T90-H1-K32-V32-fp16-h0": (1, 90, 1, 32, 32, "float16", True, -1.0, [0, 7, 7, 40, 90], 0.0,
                                              dict(CP, dv_in_sweep=True, bwd_value_block=16)),
    "stride32-kblock16-varlen-T100-H1-K32-V16-fp32": (1, 100, 1, 32, 16, "float32", False, -1.0, [0, 1, 50, 100],
                                                      0.0, dict(CP, state_stride=32, bwd_key_block=16,
                                                                spans_per_program=2)),
    "segmented-saved-B1-T150-H1-K16-V32-fp32-h0": (1, 150, 1, 16, 32, "float32", True, -1.0, None, 0.0,
                                                   dict(CP, segment=64, save_states=True)),
    # 32-token backward chunks with log decays down to -5: spans past SPAN_LIMIT, the element-wise path
    "bwdchunk32-decay5-B1-T100-H1-K16-V16-fp32-h0": (1, 100, 1, 16, 16, "float32", True, -5.0, None, 0.0,
                                                     dict(CP, bwd_chunk=32)),
    "lambda1-B1-T40-H1-K16-V16-fp32-h0": (1, 40, 1, 16, 16, "float32", True, 0.0, None, 0.0, CP),
    # K = 128: the state sweeps in two 64-row blocks, the dq/dk kernel in key blocks of 64
    "K128-V32-kblock64-B1-T40-H1-fp32-h0": (1, 40, 1, 128, 32, "float32", True, -1.0, None, 0.0,
                                            dict(CP, bwd_key_block=64)),
    # hard resets (-1e3) in 5 % of the (token, head, channel) log decays, the rest ordinary
    "resets-B1-T60-H1-K16-V32-fp32-h0": (1, 60, 1, 16, 32, "float32", True, -0.5, None, 0.05, CP),
    "resets-fused-stride32-B1-T70-H1-K16-V16-fp32-h0": (1, 70, 1, 16, 16, "float32", True, -0.5, None, 0.05,
                                                        dict(CP, fused_dv=True, state_stride=32)),
    "resets-dvsweep-B1-T50-H2-K32-V16-fp16-h0": (1, 50, 2, 32, 16, "float16", True, -0.5, None, 0.05,
                                                 dict(CP, dv_in_sweep=True)),
    "resets-kblock16-varlen-T80-H1-K32-V32-fp32-h0": (1, 80, 1, 32, 32, "float32", True, -0.5, [0, 30, 80], 0.05,
                                                      dict(CP, bwd_key_block=16, bwd_value_block=16)),
    # every log decay anywhere in [-1e3, 0]
    "decay1000-kblock16-B1-T40-H1-K32-V16-fp32-h0": (1, 40, 1, 32, 16, "float32", True, -1000.0, None, 0.0,
                                                     dict(CP, bwd_key_block=16)),
}

SCRIPT = """
import json, sys, zlib
import torch
from decaylab.ops.triton import function
from decaylab.ops.triton.check import against_reference, error_summary

ran = []
launch = function.chunk_parallel_backward
function.chunk_parallel_backward = lambda *a, **kw: (ran.append(1), launch(*a, **kw))[1]
for name, (B, T, H, K, V, dtype, h0, lowest, offsets, resets, overrides) in json.loads(sys.argv[1]).items():
    before = len(ran)
    pairs = against_reference(B, T, H, K, V, True, getattr(torch, dtype), lowest, offsets, overrides,
                              seed=zlib.crc32(name.encode()), device="cpu", scale=0.7, initial_state=h0,
                              resets=resets)
    errors = error_summary(pairs)
    print(json.dumps({name: dict(errors, chunk_parallel=len(ran) == before + 1)}), flush=True)
"""


@pytest.fixture(scope="module")
def results() -> dict:
    return run_under_interpreter(SCRIPT, CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_vector_chunk_parallel_backward_matches_recurrence_under_interpreter(results, name):
    dtype, with_h0, lowest, resets = CASES[name][5], CASES[name][6], CASES[name][7], CASES[name][9]
    found = dict(results[name])
    assert found.pop("chunk_parallel"), f"{name}: the chunk-parallel backward did not run"
    assert set(found) == {"o", "final_state", "dq", "dk", "dv", "dlog_decay"} | ({"dh0"} if with_h0 else set())
    assert_errors_within(name, found, dtype, lowest, resets)

