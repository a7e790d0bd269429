"""The one-token decode kernel under TRITON_INTERPRET=1 against the recurrence at T = 1, and the dispatch to it.

The interpreter must be on before triton is imported and the rest of the suite imports triton without it, so the
cases run in one child process that prints one JSON line of errors per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

# name -> (B, H, K, V, vector, dtype, with an initial state, most negative log decay)
CASES = {
    "scalar-B3-H2-K16-V32-fp32-h0": (3, 2, 16, 32, False, "float32", True, -1.0),
    "vector-B3-H2-K32-V16-fp32-h0": (3, 2, 32, 16, True, "float32", True, -1.0),
    "vector-B2-H1-K128-V64-bf16-h0": (2, 1, 128, 64, True, "bfloat16", True, -1.0),  # K in two tiles
    "scalar-B1-H2-K64-V128-fp16": (1, 2, 64, 128, False, "float16", False, -1.0),  # V in two tiles, no state
    "vector-decay1000-B2-H1-K16-V16-fp32-h0": (2, 1, 16, 16, True, "float32", True, -1000.0),
}
TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}  # relative to the output's RMS

CHILD = r"""
import json, sys, torch
from decaylab.ops.reference.recurrent import recurrent_decay_linear_attention as recurrent
from decaylab.ops.triton.decode import decode_step
from decaylab.ops.triton.function import triton_decay_linear_attention
cases = json.loads(sys.argv[1])
for name, (B, H, K, V, vector, dtype, h0, lowest) in cases.items():
    g = torch.Generator().manual_seed(len(name))
    dt = getattr(torch, dtype)
    q, k = (torch.randn(B, 1, H, K, generator=g).to(dt) for _ in range(2))
    v = torch.randn(B, 1, H, V, generator=g).to(dt)
    shape = (B, 1, H, K) if vector else (B, 1, H)
    log_decay = torch.rand(shape, generator=g) * lowest
    state = torch.randn(B, H, K, V, generator=g) if h0 else None
    want_o, want_s = recurrent(q, k, v, log_decay, scale=0.7, initial_state=state, output_final_state=True)
    got_o, got_s = decode_step(q, k, v, log_decay, 0.7, state)
    with torch.no_grad():
        op_o, op_s = triton_decay_linear_attention(q, k, v, log_decay, scale=0.7, initial_state=state,
                                                   output_final_state=True)
    rel = lambda a, b: float((a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt())
    print(json.dumps({"case": name, "o": rel(got_o, want_o), "state": rel(got_s, want_s),
                      "op_same": bool(torch.equal(op_o, got_o) and torch.equal(op_s, got_s)),
                      "dtype": str(got_o.dtype), "finite": bool(got_o.isfinite().all() and got_s.isfinite().all())}))
"""


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(CASES)], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).resolve().parents[2], timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return {r["case"]: r for r in map(json.loads, out.stdout.splitlines())}


@pytest.mark.parametrize("case", list(CASES))
def test_decode_step_matches_the_recurrence(results, case):
    r, dtype = results[case], CASES[case][5]
    assert r["finite"] and r["dtype"] == f"torch.{dtype}"
    assert r["o"] < TOLERANCE[dtype] and r["state"] < 1e-6  # the state is fp32 in both
    assert r["op_same"]  # triton_decay_linear_attention at T = 1 without gradients is this kernel


@pytest.mark.gpu
@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("B,H,K,V,dtype", [(32, 12, 64, 64, "bfloat16"), (1, 4, 256, 128, "float16"),
                                           (3, 2, 16, 32, "float32")])  # fmt: skip
def test_decode_step_matches_the_recurrence_on_gpu(B, H, K, V, dtype, vector):
    import torch

    from decaylab.ops.reference.recurrent import recurrent_decay_linear_attention
    from decaylab.ops.triton.decode import decode_step

    g = torch.Generator(device="cuda").manual_seed(B * K + V)
    dt = getattr(torch, dtype)
    q, k = (torch.randn(B, 1, H, K, device="cuda", generator=g).to(dt) for _ in range(2))
    v = torch.randn(B, 1, H, V, device="cuda", generator=g).to(dt)
    log_decay = -torch.rand((B, 1, H, K) if vector else (B, 1, H), device="cuda", generator=g) * 3
    state = torch.randn(B, H, K, V, device="cuda", generator=g)
    want_o, want_s = recurrent_decay_linear_attention(q, k, v, log_decay, scale=0.5, initial_state=state,
                                                      output_final_state=True)  # fmt: skip
    got_o, got_s = decode_step(q, k, v, log_decay, 0.5, state)
    rel = (got_o.float() - want_o.float()).pow(2).mean().sqrt() / want_o.float().pow(2).mean().sqrt()
    assert rel < TOLERANCE[dtype]
    torch.testing.assert_close(got_s, want_s, rtol=1e-5, atol=1e-5)
