"""The vector-decay forward in sub-chunks (fwd_subchunk; ops/triton/subchunk.py) under TRITON_INTERPRET=1 on CPU:
forward, final state and every gradient against the fp64 recurrence, with each backward fed by it.

As in test_triton_vector_chunk_parallel.py, the cases run in one child process built by decaylab.ops.triton.check.
Chunks of 64 tokens in sub-chunks of 16 (and 32 / 128 tokens in sub-chunks of 16), T off both grids, K != V,
an initial state and a final-state gradient in every case, packed sequences (a short and an empty one), segments,
value blocks; the two-sweep backward at 16-token chunks (the brief's pairing) and at the forward's 64, the
chunk-parallel backward on forward-saved states (one per 64 tokens, 16-token backward chunks) and on its own.
Log decays down to -4 make 64-token chunks decay far past SPAN_LIMIT while each 16-token sub-chunk stays within it,
so the sub-chunked path, not the element-wise fallback, carries them (the child measures both on the gates it
builds); hard resets (log decay -1e3) send their chunks' diagonal blocks down the element-wise path. bf16 runs on a
GPU only (tests/ops/test_triton_gpu.py, ``-k vector_subchunk``).
"""

from __future__ import annotations

import pytest

from tests.ops.helpers import assert_errors_within, run_under_interpreter

SPAN_LIMIT = 100.0  # configs.SPAN_LIMIT (log2 units), restated: the parent process does not import triton
SUB = dict(chunk=64, fwd_subchunk=16, bwd_chunk=16)  # the pairing the sub-chunked forward is built for
CP = dict(chunk_parallel_backward=True)
# name -> (B, T, H, K, V, dtype, most negative log decay, varlen offsets, fraction of hard resets, launch-plan
# overrides of the interpreter's plan)
CASES = {
    "B2-T70-H2-K32-V16-fp32": (2, 70, 2, 32, 16, "float32", -1.0, None, 0.0, SUB),
    "B1-T75-H2-K16-V32-fp16": (1, 75, 2, 16, 32, "float16", -1.0, None, 0.0, SUB),
    "varlen-T100-H1-K32-V16-fp32": (1, 100, 1, 32, 16, "float32", -1.0, [0, 5, 5, 70, 100], 0.0, SUB),
    # 16-token sub-chunks within SPAN_LIMIT, 64-token chunks far past it (checked below on the gates built)
    "spans-B1-T150-H2-K16-V16-fp32": (1, 150, 2, 16, 16, "float32", -4.0, None, 0.0, SUB),
    "spans-varlen-T150-H1-K32-V16-fp16": (1, 150, 1, 32, 16, "float16", -4.0, [0, 3, 150], 0.0, SUB),
    "chunk32-B1-T50-H1-K16-V16-fp32": (1, 50, 1, 16, 16, "float32", -4.0, None, 0.0, dict(SUB, chunk=32)),
    "chunk128-B1-T140-H1-K16-V16-fp32": (1, 140, 1, 16, 16, "float32", -1.0, None, 0.0,
                                         dict(SUB, chunk=128, gate_stride=128)),
    "vblock16-segments-B1-T200-H1-K16-V32-fp32": (1, 200, 1, 16, 32, "float32", -2.0, None, 0.0,
                                                  dict(SUB, fwd_value_block=16, segment=64)),
    # the two-sweep backward at the forward's chunk: 64-token backward chunks past SPAN_LIMIT, exact path there
    "twosweep-bwdchunk64-B1-T90-H1-K16-V16-fp32": (1, 90, 1, 16, 16, "float32", -4.0, None, 0.0,
                                                   dict(SUB, bwd_chunk=0)),
    # the chunk-parallel backward on the forward's saved states (one per 64 tokens) at 16-token chunks
    "saved-stride64-B1-T100-H1-K16-V32-fp32": (1, 100, 1, 16, 32, "float32", -2.0, None, 0.0,
                                               dict(SUB, **CP, save_states=True, state_stride=64)),
    "saved-fused-varlen-T130-H1-K32-V16-fp16": (1, 130, 1, 32, 16, "float16", -1.0, [0, 20, 130], 0.0,
                                                dict(SUB, **CP, save_states=True, state_stride=64, fused_dv=True)),
    "cp-own-sweep-B1-T70-H1-K16-V16-fp32": (1, 70, 1, 16, 16, "float32", -1.0, None, 0.0, dict(SUB, **CP)),
    # hard resets (-1e3) in 5 % of the (token, head, channel) log decays, the rest ordinary
    "resets-B1-T90-H1-K16-V32-fp32": (1, 90, 1, 16, 32, "float32", -0.5, None, 0.05, SUB),
    "resets-K64-B1-T70-H1-V16-fp16": (1, 70, 1, 64, 16, "float16", -0.5, None, 0.05, SUB),
    # every log decay anywhere in [-1e3, 0]
    "decay1000-B1-T70-H1-K32-V16-fp32": (1, 70, 1, 32, 16, "float32", -1000.0, None, 0.0, SUB),
}

SCRIPT = """
import json, math, sys, zlib
import torch
from decaylab.ops.triton import function
from decaylab.ops.triton.check import against_reference, error_summary

forwards = []
launch = function._forward
def record(*args, **kwargs):
    cfg = args[13]
    forwards.append([cfg.forward.chunk, cfg.forward.subchunk])
    return launch(*args, **kwargs)
function._forward = record


def decays(log_decay, width, offsets, whole):
    # per (window of `width` tokens, head, channel) of each sequence, its windows' total decays in log2 units
    # (with `whole`, only windows of `width` tokens, not a sequence's shorter last one)
    bounds = offsets or [0, log_decay.shape[1]]
    totals = []
    for bos, eos in zip(bounds[:-1], bounds[1:]):
        for start in range(bos, eos - width + 1 if whole else eos, width):
            totals.append(-log_decay[:, start:min(start + width, eos)].sum(1).flatten() / math.log(2))
    return torch.cat(totals)


for name, (B, T, H, K, V, dtype, lowest, offsets, resets, overrides) in json.loads(sys.argv[1]).items():
    seed = zlib.crc32(name.encode())
    gen = torch.Generator().manual_seed(seed)
    log_decay = torch.rand(B, T, H, K, generator=gen) * lowest
    del forwards[:]
    pairs = against_reference(B, T, H, K, V, True, getattr(torch, dtype), lowest, offsets, overrides, seed=seed,
                              device="cpu", scale=0.7, initial_state=True, resets=resets, log_decay=log_decay)
    errors = error_summary(pairs)
    chunks = decays(log_decay, overrides["chunk"], offsets, True)
    spans = [decays(log_decay, overrides["fwd_subchunk"], offsets, False).max().item(), chunks.max().item(),
             chunks.median().item()]
    print(json.dumps({name: dict(errors, forwards=forwards, spans=spans)}), flush=True)
"""


@pytest.fixture(scope="module")
def results() -> dict:
    return run_under_interpreter(SCRIPT, CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_vector_subchunk_forward_matches_recurrence_under_interpreter(results, name):
    dtype, lowest, resets, overrides = CASES[name][5], CASES[name][6], CASES[name][8], CASES[name][9]
    found = dict(results[name])
    forwards, spans = found.pop("forwards"), found.pop("spans")
    assert forwards and all(f == [overrides["chunk"], overrides["fwd_subchunk"]] for f in forwards), forwards
    assert set(found) == {"o", "final_state", "dq", "dk", "dv", "dlog_decay", "dh0"}
    assert_errors_within(name, found, dtype, lowest, resets)


@pytest.mark.parametrize("name", [name for name in CASES if name.startswith("spans")])
def test_the_span_cases_exercise_sub_chunks_not_the_fallback(results, name):
    """The gates built for these cases: every sub-chunk's decay within SPAN_LIMIT (the sub-chunked dots carry the
    whole chunk), the whole chunks' far past it (a forward without sub-chunks would take the element-wise path)."""
    sub_max, chunk_max, chunk_median = results[name]["spans"]
    assert sub_max <= SPAN_LIMIT, f"{name}: a sub-chunk decays {sub_max:.1f} log2 units, past SPAN_LIMIT"
    assert chunk_median > 1.5 * SPAN_LIMIT and chunk_max > 2 * SPAN_LIMIT, (name, chunk_median, chunk_max)
