"""Triton kernels under TRITON_INTERPRET=1 on CPU: forward, final state and every gradient vs the fp64 recurrence.

The interpreter must be switched on before triton is imported, and the rest of the suite imports triton without
it, so all cases run in one child process (``python this_file.py``) that prints one JSON line of errors per case;
each parametrized test then checks its case. The child builds each case with decaylab.ops.triton.check, the
harness the GPU tests and `decaylab bench kernels --section accuracy` use, so that harness is checked here too. Shapes stay tiny: the
interpreter is ~1000x slower than a GPU.
bf16 is not tested here (the interpreter's bf16 dot is broken); tests/ops/test_triton_gpu.py covers it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from helpers import ATOL_GATE_EXTREME, RATIO, RATIO_EXTREME

# name -> (B, T, H, K, V, vector, dtype, with initial state, most negative log decay, varlen offsets or None)
CASES = {
    "scalar-B2-T37-H2-K16-V32-fp32-h0": (2, 37, 2, 16, 32, False, "float32", True, -1.0, None),
    "vector-B2-T37-H2-K16-V32-fp32-h0": (2, 37, 2, 16, 32, True, "float32", True, -1.0, None),
    "scalar-B1-T33-H1-K64-V64-fp32": (1, 33, 1, 64, 64, False, "float32", False, -1.0, None),
    "vector-B1-T33-H1-K64-V64-fp32-h0": (1, 33, 1, 64, 64, True, "float32", True, -1.0, None),
    "vector-B1-T20-H1-K128-V128-fp32": (1, 20, 1, 128, 128, True, "float32", False, -1.0, None),
    "scalar-B1-T20-H1-K128-V64-fp16-h0": (1, 20, 1, 128, 64, False, "float16", True, -1.0, None),
    "vector-B1-T48-H2-K32-V16-fp16-h0": (1, 48, 2, 32, 16, True, "float16", True, -1.0, None),
    "scalar-B1-T48-H2-K32-V16-fp16": (1, 48, 2, 32, 16, False, "float16", False, -1.0, None),
    "vector-decay5-B1-T40-H1-K32-V32-fp32-h0": (1, 40, 1, 32, 32, True, "float32", True, -5.0, None),
    "scalar-decay5-B1-T40-H1-K32-V32-fp32-h0": (1, 40, 1, 32, 32, False, "float32", True, -5.0, None),
    "vector-lambda1-B1-T24-H1-K16-V16-fp32-h0": (1, 24, 1, 16, 16, True, "float32", True, 0.0, None),
    "vector-decay1000-B1-T40-H1-K16-V16-fp32-h0": (1, 40, 1, 16, 16, True, "float32", True, -1000.0, None),
    "scalar-decay1000-B1-T40-H1-K16-V16-fp16-h0": (1, 40, 1, 16, 16, False, "float16", True, -1000.0, None),
    "vector-varlen-T50-H2-K16-V32-fp32-h0": (1, 50, 2, 16, 32, True, "float32", True, -1.0, [0, 7, 7, 30, 50]),
    "scalar-varlen-T50-H2-K16-V32-fp32": (1, 50, 2, 16, 32, False, "float32", False, -1.0, [0, 16, 17, 50]),
    # T > 64: the backward's saved states and gate-carry restarts (every 64 tokens) are exercised
    "vector-long-decay5-B1-T150-H1-K16-V16-fp32-h0": (1, 150, 1, 16, 16, True, "float32", True, -5.0, None),
    "scalar-long-B2-T129-H1-K16-V16-fp16-h0": (2, 129, 1, 16, 16, False, "float16", True, -2.0, None),
    "vector-long-varlen-T200-H1-K16-V16-fp32": (1, 200, 1, 16, 16, True, "float32", False, -1.0, [0, 64, 65, 200]),
    "fallback-K24-B1-T20-H1-V16-fp32-h0": (1, 20, 1, 24, 16, True, "float32", True, -1.0, None),
    # the widest head dims the kernels take
    "scalar-B1-T40-H1-K256-V64-fp32-h0": (1, 40, 1, 256, 64, False, "float32", True, -2.0, None),
    "vector-B1-T24-H1-K64-V256-fp16-h0": (1, 24, 1, 64, 256, True, "float16", True, -1.0, None),
    "scalar-varlen-T90-H1-K32-V256-fp16-h0": (1, 90, 1, 32, 256, False, "float16", True, -1.0, [0, 40, 90]),
    "vector-decay1000-B1-T40-H1-K256-V16-fp32-h0": (1, 40, 1, 256, 16, True, "float32", True, -1000.0, None),
    # sequences split into segments of 64 tokens (segments.py): local states, the scans, dh0 through the scan
    "segmented-scalar-B2-T150-H1-K16-V16-fp32-h0": (2, 150, 1, 16, 16, False, "float32", True, -1.0, None),
    "segmented-vector-B1-T150-H2-K16-V32-fp32-h0": (1, 150, 2, 16, 32, True, "float32", True, -2.0, None),
    "segmented-vector-B1-T150-H1-K16-V16-fp32": (1, 150, 1, 16, 16, True, "float32", False, -1.0, None),
    # one long sequence among short ones, with programs enough: split by the imbalance rule (segment_length)
    "imbalanced-scalar-varlen-T230-H2-K16-V16-fp32-h0": (1, 230, 2, 16, 16, False, "float32", True, -1.0,
                                                         [0, 200, 210, 220, 230]),
    # state blocks: 2 x 1 per head in the segment sweeps (64 x 64, on 64-token steps for the vector one), 4 x 2 in
    # the scans (32 x 32)
    "segmented-vector-B1-T150-H1-K128-V64-fp32-h0": (1, 150, 1, 128, 64, True, "float32", True, -1.0, None),
    "segmented-scalar-B1-T150-H1-K128-V64-fp32-h0": (1, 150, 1, 128, 64, False, "float32", True, -1.0, None),
    "segmented-vector-varlen-T200-H1-K16-V16-fp32-h0": (1, 200, 1, 16, 16, True, "float32", True, -1.0,
                                                        [0, 64, 65, 200]),
    "segmented-scalar-varlen-T200-H1-K16-V16-fp16-h0": (1, 200, 1, 16, 16, False, "float16", True, -1.0,
                                                        [0, 0, 130, 200]),
    "segmented-vector-decay1000-B1-T140-H1-K16-V16-fp32-h0": (1, 140, 1, 16, 16, True, "float32", True, -1000.0,
                                                              None),
    # built without the exact intra-chunk path (exact_intra=False, a timing plan): right on bounded decays, and a
    # hard reset must come out non-finite, never silently wrong
    "noexact-vector-B1-T40-H2-K32-V32-fp32-h0": (1, 40, 2, 32, 32, True, "float32", True, -1.0, None),
    "noexact-vector-decay1000-B1-T40-H1-K16-V16-fp32-h0": (1, 40, 1, 16, 16, True, "float32", True, -1000.0, None),
    # the backward on a chunk twice the forward's (the result must not depend on the schedule)
    "bwd-chunk32-vector-B1-T100-H1-K16-V16-fp32-h0": (1, 100, 1, 16, 16, True, "float32", True, -2.0, None),
    "bwd-chunk32-scalar-varlen-T120-H1-K16-V16-fp16": (1, 120, 1, 16, 16, False, "float16", False, -1.0,
                                                       [0, 33, 120]),
    # the backward split over blocks of 16 key channels: partial dv (and scalar gate) gradients summed
    "kblock16-scalar-B1-T100-H2-K32-V16-fp32-h0": (1, 100, 2, 32, 16, False, "float32", True, -2.0, None),
    "kblock16-vector-varlen-T150-H1-K64-V32-fp32-h0": (1, 150, 1, 64, 32, True, "float32", True, -1.0, [0, 70, 150]),
    "kblock16-scalar-B1-T90-H1-K32-V32-fp16": (1, 90, 1, 32, 32, False, "float16", False, -1.0, None),
    # the chunk-parallel scalar backward (chunk_parallel.py): per-chunk states, then one program per chunk
    "cparallel-scalar-B2-T150-H2-K16-V32-fp32-h0": (2, 150, 2, 16, 32, False, "float32", True, -2.0, None),
    "cparallel-scalar-varlen-T200-H1-K32-V16-fp16-h0": (1, 200, 1, 32, 16, False, "float16", True, -1.0,
                                                        [0, 0, 64, 65, 200]),
    "cparallel-segmented-scalar-B1-T150-H1-K16-V16-fp32-h0": (1, 150, 1, 16, 16, False, "float32", True, -1.0,
                                                              None),
    "cparallel-decay1000-B1-T60-H1-K16-V16-fp32": (1, 60, 1, 16, 16, False, "float32", False, -1000.0, None),
    # value blocks of 16 in the gradient kernels, key blocks of 16 for dq/dk; K=128 splits the state sweeps
    "cparallel-vblock16-scalar-B1-T70-H2-K16-V64-fp32-h0": (1, 70, 2, 16, 64, False, "float32", True, -2.0, None),
    "cparallel-vblock16-scalar-varlen-T90-H1-K128-V32-fp16-h0": (1, 90, 1, 128, 32, False, "float16", True, -1.0,
                                                                 [0, 40, 90]),
    # the forward in blocks of 16 value channels (scores recomputed per block), with segments and saved states
    "fvblock16-scalar-B2-T70-H2-K16-V32-fp32-h0": (2, 70, 2, 16, 32, False, "float32", True, -2.0, None),
    "fvblock16-vector-varlen-T150-H1-K32-V64-fp16-h0": (1, 150, 1, 32, 64, True, "float16", True, -1.0, [0, 70, 150]),
    "fvblock16-savestates-segmented-scalar-B1-T150-H1-K16-V32-fp32-h0": (1, 150, 1, 16, 32, False, "float32", True,
                                                                         -1.0, None),
    # dv computed in the dq/dk kernel
    "fuseddv-scalar-B2-T100-H2-K32-V32-fp32-h0": (2, 100, 2, 32, 32, False, "float32", True, -2.0, None),
    "fuseddv-vblock16-scalar-varlen-T150-H1-K16-V64-fp16-h0": (1, 150, 1, 16, 64, False, "float16", True, -1.0,
                                                               [0, 1, 80, 150]),
    # dv computed by the reverse state-gradient sweep (value blocks of 16 where V > 16)
    "dvsweep-scalar-B2-T100-H2-K32-V32-fp32-h0": (2, 100, 2, 32, 32, False, "float32", True, -2.0, None),
    "dvsweep-scalar-varlen-T150-H1-K16-V64-fp16-h0": (1, 150, 1, 16, 64, False, "float16", True, -1.0,
                                                      [0, 1, 80, 80, 150]),
    "dvsweep-segmented-scalar-B1-T150-H1-K32-V16-fp32": (1, 150, 1, 32, 16, False, "float32", False, -3.0, None),
    "dvsweep-decay1000-B1-T60-H1-K16-V16-fp32-h0": (1, 60, 1, 16, 16, False, "float32", True, -1000.0, None),
    # one state stored per span of 2 or 4 chunks; the gradient kernels rebuild each chunk's state and gradient
    "stride32-scalar-B2-T100-H2-K32-V16-fp32-h0": (2, 100, 2, 32, 16, False, "float32", True, -2.0, None),
    "stride64-scalar-varlen-T150-H1-K16-V32-fp16-h0": (1, 150, 1, 16, 32, False, "float16", True, -1.0,
                                                       [0, 1, 70, 150]),
    "stride32-segmented-fused-scalar-B1-T150-H1-K16-V16-fp32-h0": (1, 150, 1, 16, 16, False, "float32", True, -1.0,
                                                                   None),
    "stride32-kblock16-scalar-B1-T90-H1-K32-V32-fp32-h0": (1, 90, 1, 32, 32, False, "float32", True, -3.0, None),
    "stride32-decay1000-B1-T60-H1-K16-V16-fp32": (1, 60, 1, 16, 16, False, "float32", False, -1000.0, None),
    # the forward saves the chunk states and the backward skips its state sweep
    "savestates-scalar-B2-T100-H2-K32-V16-fp32-h0": (2, 100, 2, 32, 16, False, "float32", True, -2.0, None),
    "savestates-segmented-scalar-varlen-T200-H1-K16-V32-fp16-h0": (1, 200, 1, 16, 32, False, "float16", True, -1.0,
                                                                   [0, 0, 64, 65, 200]),
    # the forward (chunk 32) saves one state per 32 tokens, which the backward on 16-token chunks reads as a state
    # every other chunk of its own
    "savespan32-bwdchunk16-scalar-B1-T100-H2-K16-V32-fp32-h0": (1, 100, 2, 16, 32, False, "float32", True, -2.0, None),
    "savespan32-bwdchunk16-scalar-varlen-T150-H1-K32-V16-fp16-h0": (1, 150, 1, 32, 16, False, "float16", True, -1.0,
                                                                    [0, 1, 70, 150]),
    # key and value blocks on the second grid axis (blocks_adjacent=False) instead of next to each other
    "order2d-scalar-varlen-T150-H2-K128-V32-fp32-h0": (1, 150, 2, 128, 32, False, "float32", True, -1.0,
                                                       [0, 70, 150]),
    "order2d-vector-B1-T100-H2-K32-V32-fp32-h0": (1, 100, 2, 32, 32, True, "float32", True, -2.0, None),
}
# Launch-config overrides per case: segmented cases cut sequences into 64-token segments.
OVERRIDES = {name: dict(segment=64) for name in CASES if name.startswith("segmented-")}
OVERRIDES.update({name: dict(bwd_chunk=32) for name in CASES if name.startswith("bwd-chunk32-")})
OVERRIDES.update({name: dict(bwd_key_block=16) for name in CASES if name.startswith("kblock16-")})
OVERRIDES["kblock16-vector-varlen-T150-H1-K64-V32-fp32-h0"].update(segment=64, bwd_chunk=32)
OVERRIDES.update({name: dict(chunk_parallel_backward=True) for name in CASES if name.startswith("cparallel-")})
OVERRIDES.update({name: dict(exact_intra=False) for name in CASES if name.startswith("noexact-")})
OVERFLOWS = {"noexact-vector-decay1000-B1-T40-H1-K16-V16-fp32-h0"}  # past the fast path's range, by design
OVERRIDES["cparallel-scalar-varlen-T200-H1-K32-V16-fp16-h0"].update(bwd_chunk=32)
OVERRIDES["cparallel-segmented-scalar-B1-T150-H1-K16-V16-fp32-h0"].update(segment=64)
OVERRIDES.update({name: dict(chunk_parallel_backward=True, save_states=True) for name in CASES
                  if name.startswith("savestates-")})
OVERRIDES["savestates-segmented-scalar-varlen-T200-H1-K16-V32-fp16-h0"].update(segment=64)
OVERRIDES.update({name: dict(fwd_value_block=16) for name in CASES if name.startswith("fvblock16-")})
OVERRIDES.update({name: dict(chunk_parallel_backward=True, fused_dv=True, save_states=True) for name in CASES
                  if name.startswith("fuseddv-")})
OVERRIDES["fuseddv-vblock16-scalar-varlen-T150-H1-K16-V64-fp16-h0"].update(bwd_value_block=16, save_states=False)
OVERRIDES.update({name: dict(chunk_parallel_backward=True, dv_in_sweep=True, save_states=True, bwd_value_block=16)
                  for name in CASES if name.startswith("dvsweep-")})
OVERRIDES["dvsweep-segmented-scalar-B1-T150-H1-K32-V16-fp32"].update(segment=64, save_states=False)
OVERRIDES["fvblock16-vector-varlen-T150-H1-K32-V64-fp16-h0"].update(segment=64)
OVERRIDES["fvblock16-savestates-segmented-scalar-B1-T150-H1-K16-V32-fp32-h0"].update(
    segment=64, chunk_parallel_backward=True, save_states=True)
OVERRIDES.update({name: dict(chunk_parallel_backward=True, state_stride=int(name[6:8])) for name in CASES
                  if name.startswith("stride")})
OVERRIDES["stride32-scalar-B2-T100-H2-K32-V16-fp32-h0"].update(save_states=True)
OVERRIDES["stride64-scalar-varlen-T150-H1-K16-V32-fp16-h0"].update(bwd_value_block=16)
OVERRIDES["stride32-segmented-fused-scalar-B1-T150-H1-K16-V16-fp32-h0"].update(segment=64, save_states=True,
                                                                               fused_dv=True)
OVERRIDES["stride32-kblock16-scalar-B1-T90-H1-K32-V32-fp32-h0"].update(bwd_key_block=16, save_states=True)
OVERRIDES.update({name: dict(chunk=32, bwd_chunk=16, state_stride=32, chunk_parallel_backward=True,
                             save_states=True) for name in CASES if name.startswith("savespan32-")})
# gradient programs walking several spans (the last program's group cut short)
OVERRIDES["cparallel-scalar-B2-T150-H2-K16-V32-fp32-h0"].update(spans_per_program=3)
OVERRIDES["fuseddv-scalar-B2-T100-H2-K32-V32-fp32-h0"].update(spans_per_program=4)
OVERRIDES["stride32-kblock16-scalar-B1-T90-H1-K32-V32-fp32-h0"].update(spans_per_program=2)
# 8 programs >= split_below; a share is 230 * 2 / 32 = 14 tokens, the 200-token sequence > 4 shares: cut to 64
OVERRIDES["imbalanced-scalar-varlen-T230-H2-K16-V16-fp32-h0"] = dict(split_below=1, target_programs=32)
OVERRIDES["segmented-vector-B1-T150-H1-K128-V64-fp32-h0"].update(sweep_block=64, sweep_chunk=64)
OVERRIDES["segmented-scalar-B1-T150-H1-K128-V64-fp32-h0"].update(sweep_block=64)
# every blocked kernel: forward value blocks, both backwards' key blocks, split state sweeps, segment sweeps
OVERRIDES["order2d-scalar-varlen-T150-H2-K128-V32-fp32-h0"] = dict(
    blocks_adjacent=False, fwd_value_block=16, chunk_parallel_backward=True, save_states=True, dv_in_sweep=True,
    bwd_value_block=16, bwd_key_block=64, segment=64)
OVERRIDES["order2d-vector-B1-T100-H2-K32-V32-fp32-h0"] = dict(
    blocks_adjacent=False, fwd_value_block=16, bwd_key_block=16, segment=64, sweep_block=16)
for name in CASES:
    if name.startswith("cparallel-vblock16-"):
        OVERRIDES[name].update(bwd_value_block=16, bwd_key_block=16)


def _random_cases(count: int, seed: int = 0) -> None:
    """Seeded random shapes and launch options (segments, key blocks, backward chunk, chunk-parallel backward),
    added to CASES and OVERRIDES: combinations nobody thought to write down."""
    rng = random.Random(seed)
    for i in range(count):
        vector = rng.random() < 0.5
        K, V, H = rng.choice([16, 32]), rng.choice([16, 32]), rng.choice([1, 2])
        offsets = None
        if rng.random() < 0.4:
            offsets = [0]
            for _ in range(rng.randint(1, 3)):
                offsets.append(offsets[-1] + rng.choice([0, 1, 17, 64, 65, 100]))
            B, T = 1, offsets[-1]
        else:
            B, T = rng.choice([1, 2]), rng.choice([1, 31, 65, 129])
        if T == 0:
            offsets[-1] = T = 5
        dtype = rng.choice(["float32", "float16"])
        case = (B, T, H, K, V, vector, dtype, rng.random() < 0.6, rng.choice([0.0, -0.5, -2.0, -5.0]), offsets)
        name = f"random{i}-{'vector' if vector else 'scalar'}-B{B}-T{T}-H{H}-K{K}-V{V}-{dtype}"
        CASES[name] = case
        overrides = dict(bwd_chunk=rng.choice([0, 32]), segment=rng.choice([0, 64]),
                         bwd_key_block=rng.choice([0, 16]), fwd_value_block=rng.choice([0, 16]),
                         sweep_chunk=rng.choice([0, 32, 64]), sweep_block=rng.choice([0, 16]))
        if not vector:
            overrides["chunk_parallel_backward"] = rng.random() < 0.5
            overrides["bwd_value_block"] = rng.choice([0, 16])
            overrides["save_states"] = overrides["chunk_parallel_backward"] and not overrides["bwd_chunk"] \
                and rng.random() < 0.5
            overrides["fused_dv"] = overrides["chunk_parallel_backward"] and not overrides["bwd_key_block"] \
                and rng.random() < 0.5
            if overrides["chunk_parallel_backward"]:
                overrides["spans_per_program"] = rng.choice([1, 2, 3])
                overrides["state_stride"] = rng.choice([0, 64] if overrides["bwd_chunk"] else [0, 32, 64])
                overrides["dv_in_sweep"] = not overrides["fused_dv"] and not overrides["state_stride"] \
                    and rng.random() < 0.5
        OVERRIDES[name] = overrides


_random_cases(12)

# Relative RMS error allowed per dtype, and the bounds where log decays reach -1e3: tests/ops/helpers.py says why.


def _worker(names: list[str]) -> None:
    """Child process: run the cases and print '{name: {tensor: [rel_err, finite, max_abs_err, ref_norm]}}' as one
    JSON line."""
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from decaylab.ops.triton.check import against_reference

    def err(out, ref):
        out, ref = out.double(), ref.double()
        rel = ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()
        return [rel, bool(torch.isfinite(out).all()), (out - ref).abs().max().item(), ref.norm().item()]

    results = {}
    for name in names:
        B, T, H, K, V, vector, dtype, with_h0, lowest, offsets = CASES[name]
        pairs = against_reference(B, T, H, K, V, vector, getattr(torch, dtype), lowest, offsets, OVERRIDES.get(name),
                                  seed=zlib.crc32(name.encode()), device="cpu", scale=0.7, initial_state=with_h0)
        results[name] = {tensor: err(out, ref) for tensor, (out, ref) in pairs.items()}
    print(json.dumps(results))


@pytest.fixture(scope="module")
def interpreter_results() -> dict:
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, __file__, *CASES], capture_output=True, text=True, env=env, cwd=repo,
                          timeout=600)
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stderr[-4000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    results["__stderr__"] = proc.stderr
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_recurrence_under_interpreter(interpreter_results, name):
    dtype, lowest = CASES[name][6], CASES[name][8]
    results = interpreter_results[name]
    assert set(results) >= {"o", "final_state", "dq", "dk", "dv", "dlog_decay"}
    if name in OVERFLOWS:
        assert not all(finite for _, finite, _, _ in results.values()), f"{name}: an overflow went unseen"
        return
    for tensor, (rel, finite, max_abs, ref_norm) in results.items():
        assert finite, f"{name}: {tensor} has non-finite values"
        # exactly zero when no state reaches a decay (one-token sequences without an initial state)
        if tensor == "dlog_decay" and (lowest <= -100 or ref_norm == 0):
            atol = ATOL_GATE_EXTREME[dtype]
            assert max_abs < atol, f"{name}: {tensor} max abs error {max_abs:.3e} >= {atol:.1e}"
            continue
        ratio = (RATIO_EXTREME if lowest <= -100 else RATIO)[dtype]
        assert rel < ratio, f"{name}: {tensor} relative RMS error {rel:.3e} >= {ratio:.1e}"


def test_uncovered_head_dims_fall_back_with_one_warning(interpreter_results):
    """The K=24 case runs on the torch chunked backend (its errors are checked above) and says so, once."""
    assert interpreter_results["__stderr__"].count("outside the kernels") == 1
    assert "K=24, V=16" in interpreter_results["__stderr__"]


if __name__ == "__main__":
    _worker(sys.argv[1:])
