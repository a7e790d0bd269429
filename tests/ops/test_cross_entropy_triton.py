"""The fused language-model loss (decaylab/ops/triton/cross_entropy.py) against the float64 formula: the loss and
both gradients, with ignored rows, mean and sum, an upstream gradient, vocabularies of one and several kernel blocks
(a ragged last block), in float32, bfloat16 and under bf16 autocast.

On CPU the kernel runs under TRITON_INTERPRET=1 in one child process (the interpreter must be on before triton is
imported); the ``gpu`` cases run it on CUDA at a real size, inside a CUDA graph too.
"""

from __future__ import annotations

import re

import pytest
import torch

from tests.ops.helpers import run_under_interpreter

# relative RMS error against float64, by the case's precision (bf16: logits and gradients rounded to bf16 once)
TOLERANCE = {"float32": 2e-5, "bfloat16": 8e-3, "autocast": 8e-3}

CHILD = r"""
import json, sys
import torch
import decaylab.ops.triton.cross_entropy as ce
from decaylab.ops.linear_cross_entropy import reference

def inputs(n, d, vocab, ignored, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, d, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(0, vocab, (n,), generator=g)
    y[torch.randperm(n, generator=g)[:ignored]] = -100
    return x, w, y

def loss_and_grads(fn, x, w, y, reduction, upstream, autocast=False):
    x, w = (t.detach().clone().requires_grad_() for t in (x, w))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = fn(x, w, y, reduction=reduction)
    (loss * upstream).backward()
    return {"loss": loss.detach(), "dx": x.grad, "dw": w.grad}

out = {}
for name, (n, d, vocab, ignored, block, precision, reduction, upstream) in json.loads(sys.argv[1]).items():
    ce.BLOCK = block
    x, w, y = inputs(n, d, vocab, ignored, seed=len(out))
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    xs, ws = x.to(dtype), w.to(dtype)
    got = loss_and_grads(ce.fused, xs, ws, y, reduction, upstream, autocast=precision == "autocast")
    # the formula in float64 on the inputs as the kernel sees them (bf16 autocast: the bf16-rounded operands)
    rounded = (xs.bfloat16(), ws.bfloat16()) if precision == "autocast" else (xs, ws)
    want = loss_and_grads(reference, *(t.double() for t in rounded), y, reduction, upstream)
    with torch.no_grad():
        plain = ce.fused(xs, ws, y, reduction=reduction)
    result = {}
    for key, t in got.items():
        ref = want[key]
        err = ((t.double() - ref).norm() / ref.norm()).item()
        result[key] = {"error": err, "dtype": str(t.dtype).removeprefix("torch."), "finite": bool(t.isfinite().all()),
                       "nonzero": bool(ref.abs().sum() > 0)}
    result["no_grad_loss_error"] = abs(plain.double().item() - want["loss"].item()) / abs(want["loss"].item())
    out[name] = result
    print(json.dumps({name: result}), flush=True)
x, w, y = inputs(5, 4, 7, 0, 0)
y[:] = -100
print(json.dumps({"all_ignored": bool(torch.isnan(ce.fused(x.float(), w.float(), y)))}))
x, w, y = inputs(6, 4, 7, 0, 0)
y[2] = 9  # outside the vocabulary of 7
xs = x.float().requires_grad_()
loss = ce.fused(xs, w.float(), y)
loss.backward()
print(json.dumps({"out_of_range": [bool(torch.isnan(loss)), bool(torch.isnan(xs.grad).any())]}))
"""

# name -> (rows, width, vocab, ignored rows, kernel block, precision, reduction, upstream gradient)
CASES = {
    "f32 mean, blocks of 64 over 300": (37, 24, 300, 5, 64, "float32", "mean", 0.7),
    "f32 sum, one block": (29, 16, 200, 0, 4096, "float32", "sum", 1.3),
    "f32 mean, default blocks over 9000": (6, 8, 9000, 1, 4096, "float32", "mean", 1.0),
    "bf16 mean, blocks of 128 over 1000": (33, 32, 1000, 4, 128, "bfloat16", "mean", 0.5),
    "autocast mean, blocks of 64 over 333": (40, 24, 333, 6, 64, "autocast", "mean", 1.0),
}


@pytest.fixture(scope="module")
def results():
    return run_under_interpreter(CHILD, CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_loss_matches_the_formula_under_interpreter(results, case):
    precision = CASES[case][5]
    for key in ("loss", "dx", "dw"):
        r = results[case][key]
        assert r["finite"] and r["nonzero"], f"{key}: {r}"
        want_dtype = "float32" if key == "loss" or precision == "autocast" else precision
        assert r["dtype"] == want_dtype, f"{key}: {r['dtype']} (want {want_dtype})"
        assert r["error"] < TOLERANCE[precision], f"{key}: relative error {r['error']:.2e}"
    assert results[case]["no_grad_loss_error"] < TOLERANCE[precision]


def test_all_rows_ignored_gives_nan_like_torch(results):
    assert results["all_ignored"]


def test_a_target_outside_the_vocabulary_makes_the_loss_and_gradient_nan(results):
    assert results["out_of_range"] == [True, True]


def _gpu_inputs(n, d, vocab, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, d, device="cuda", generator=g)
    w = torch.randn(vocab, d, device="cuda", generator=g) * 0.05
    y = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    y[::7] = -100
    return x, w, y


def _gpu_loss_and_grads(fn, x, w, y, upstream=1.0):
    x, w = (t.detach().clone().requires_grad_() for t in (x, w))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fn(x, w, y)
    (loss * upstream).backward()
    return [loss.detach(), x.grad, w.grad]


@pytest.mark.gpu
def test_fused_loss_matches_the_formula_on_a_gpu():
    from decaylab.ops.linear_cross_entropy import reference
    from decaylab.ops.triton.cross_entropy import fused

    x, w, y = _gpu_inputs(3000, 256, 50_432)
    got = _gpu_loss_and_grads(fused, x, w, y, 0.5)
    want = _gpu_loss_and_grads(lambda *a: reference(*(t.double() for t in a[:2]), a[2]),
                               x.bfloat16().float(), w.bfloat16().float(), y, 0.5)  # fmt: skip
    for name, a, b in zip(("loss", "dx", "dw"), got, want):
        assert a.isfinite().all() and b.abs().sum() > 0, name
        err = ((a.double() - b.double()).norm() / b.double().norm()).item()
        assert err < TOLERANCE["autocast"], f"{name}: relative RMS error {err:.2e}"


@pytest.mark.gpu
def test_fused_loss_replays_in_a_cuda_graph():
    from decaylab.ops.triton.cross_entropy import fused

    x, w, y = _gpu_inputs(1000, 128, 10_000, seed=1)
    eager = _gpu_loss_and_grads(fused, x, w, y)
    xs, ws = (t.detach().clone().requires_grad_() for t in (x, w))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles) outside the capture
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fused(xs, ws, y).backward()
    torch.cuda.current_stream().wait_stream(side)
    xs.grad = ws.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fused(xs, ws, y)
        loss.backward()
    graph.replay()
    torch.cuda.synchronize()
    for name, a, b in zip(("loss", "dx", "dw"), (loss, xs.grad, ws.grad), eager):
        assert torch.equal(a, b), name


@pytest.mark.gpu
def test_linear_cross_entropy_takes_the_fused_loss_for_large_logits_on_a_gpu(monkeypatch):
    import decaylab.ops.linear_cross_entropy as lce
    from decaylab.ops.triton.cross_entropy import fused

    x, w, y = _gpu_inputs(600, 64, 5000, seed=2)
    monkeypatch.setattr(lce, "FUSED_MIN_LOGITS", 600 * 5000)
    assert torch.equal(_gpu_loss_and_grads(lce.linear_cross_entropy, x, w, y)[0], _gpu_loss_and_grads(fused, x, w, y)[0])
    monkeypatch.setattr(lce, "FUSED_MIN_LOGITS", 600 * 5000 + 1)
    small, plain = (_gpu_loss_and_grads(fn, x, w, y) for fn in (lce.linear_cross_entropy, lce.reference))
    assert all(torch.equal(a, b) for a, b in zip(small, plain))


@pytest.mark.parametrize("logits_type", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("grad", [True, False])
def test_kernel_compiles_for_sm90(logits_type, grad):
    """Down to machine code for an H100/H200 without a GPU: the launch's own types, pointers marked 16-byte aligned
    as fresh allocations are, the row stride and vocabulary a multiple of 16 as at the 160m vocabulary."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from decaylab.ops.triton.cross_entropy import BLOCK, NUM_WARPS, cross_entropy_rows_kernel

    types = {"logits": f"*{logits_type}", "targets": "*i64", "losses": "*fp32", "scale": "*fp32", "stride": "i32",
             "vocab": "i32", "ignore_index": "i32", "BLOCK": "constexpr", "GRAD": "constexpr"}
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(6)}
    source = ASTSource(cross_entropy_rows_kernel, types, {"BLOCK": BLOCK, "GRAD": grad}, attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": NUM_WARPS})
    assert kernel.asm.get("cubin"), "no machine code"
    ptx = kernel.asm["ptx"]
    stores = len(re.findall(r"\bst\.global", ptx))  # the row's loss, and with grad the row's gradient
    assert stores > 1 if grad else stores == 1, stores
