"""The FFN activation op (decaylab/ops/swiglu.py): the torch code, the dispatch, and the Triton kernels against the
float64 formula, forward and gradient, on ragged shapes (rows not a multiple of a program's, channels past one
block), in each dtype, with leading dims, under vmap over replicas and inside the FFN layer.

On CPU the kernels run under TRITON_INTERPRET=1 in one child process; they are compiled for sm_90 without a GPU;
the ``gpu`` cases run them on CUDA at the 160m model's width, inside a CUDA graph too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decaylab.ops import swiglu as op
from tests.ops.helpers import dynamo_kernel_launches, run_under_interpreter

# relative RMS error against float64, by dtype (the interpreter truncates to bf16 where a GPU rounds)
TOLERANCE = {"float32": 1e-6, "bfloat16": 8e-3, "float16": 1e-3}


def test_reference_is_silu_of_the_first_half_times_the_second():
    gv = torch.randn(3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(op.swiglu_reference(gv), F.silu(gv[..., :4]) * gv[..., 4:], rtol=0, atol=0)


def test_cpu_takes_the_torch_code_by_default_and_the_shape_is_checked():
    gv = torch.randn(4, 6)
    assert not op.kernels_take(gv)
    assert torch.equal(op.swiglu(gv), op.swiglu_reference(gv))
    with pytest.raises(ValueError, match=r"\[..., 2H\]"):
        op.swiglu(torch.randn(4, 5))


CHILD = r"""
import json, sys
import torch
from decaylab.ops import swiglu as op
from decaylab.ops.triton import swiglu as kernels
from decaylab.layers.ffn import SwiGLU
from decaylab.layers.projections import fuse

launches = []
for name in ("swiglu_forward_kernel", "swiglu_backward_kernel"):
    kernel = getattr(kernels, name)
    original = kernel.__getitem__
    kernel.__class__ = type("Counted", (kernel.__class__,), {
        "__getitem__": lambda self, grid, name=name, original=kernel.__class__.__getitem__:
            (launches.append(name), original(self, grid))[1]})

def error(a, b):
    return ((a.double() - b).norm() / b.norm()).item()

out = {}
for name, (shape, dtype, block) in json.loads(sys.argv[1]).items():
    kernels.BLOCK = block
    g = torch.Generator().manual_seed(len(out))
    gv = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(getattr(torch, dtype))
    dh = torch.randn(*shape[:-1], shape[-1] // 2, generator=g, dtype=torch.float64).to(gv.dtype)
    launches.clear()
    x = gv.clone().requires_grad_()
    with op.use_kernels(True):
        h = op.swiglu(x)
    h.backward(dh)
    ref = gv.double().requires_grad_()
    want = op.swiglu_reference(ref)
    want.backward(dh.double())
    out[name] = {"h": error(h, want.detach()), "dgv": error(x.grad, ref.grad), "dtypes": [str(h.dtype), str(x.grad.dtype)],
                 "launches": list(launches)}
    print(json.dumps({name: out[name]}), flush=True)

# under vmap over 3 replicas: their rows folded into one launch each way
g = torch.Generator().manual_seed(7)
gv = torch.randn(3, 5, 2, 40, generator=g, dtype=torch.float64).float()
launches.clear()
x = gv.clone().requires_grad_()
with op.use_kernels(True):
    h = torch.func.vmap(op.swiglu)(x)
h.sum().backward()
ref = gv.double().requires_grad_()
op.swiglu_reference(ref).sum().backward()
print(json.dumps({"vmap": {"h": error(h, op.swiglu_reference(gv.double())), "dgv": error(x.grad, ref.grad),
                           "launches": list(launches)}}), flush=True)

# the FFN layer: stacked projections with the kernels against the layer's torch code
torch.manual_seed(0)
ffn = SwiGLU(24, 40)
torch.nn.init.normal_(ffn.w3.weight)
x = torch.randn(2, 9, 24)
grads = []
for kernels_on in (True, False):
    launches.clear()
    ffn.zero_grad()
    xs = x.clone().requires_grad_()
    with fuse(True), op.use_kernels(kernels_on):
        y = ffn(xs)
    y.square().sum().backward()
    grads.append([y.detach(), xs.grad, ffn.w1.weight.grad, ffn.w2.weight.grad, ffn.w3.weight.grad])
    if kernels_on:
        layer_launches = list(launches)
print(json.dumps({"layer": {"errors": [error(a, b.double()) for a, b in zip(*grads)], "launches": layer_launches}}))
"""

# name -> (shape [..., 2H], dtype, channels per program)
CASES = {
    "f32 rows 7, H 300 in blocks of 128": ([7, 600], "float32", 128),
    "bf16 [2, 5, 2H], H 100": ([2, 5, 200], "bfloat16", 1024),
    "f16 rows 9, H 64 in blocks of 16": ([9, 128], "float16", 16),
    "f32 one row, H 1": ([1, 2], "float32", 1024),
}


@pytest.fixture(scope="module")
def results():
    return run_under_interpreter(CHILD, CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_kernels_match_the_formula_under_interpreter(results, case):
    r, dtype = results[case], CASES[case][1]
    assert r["launches"] == ["swiglu_forward_kernel", "swiglu_backward_kernel"]
    assert r["dtypes"] == [f"torch.{dtype}"] * 2
    for key in ("h", "dgv"):
        assert r[key] < TOLERANCE[dtype], f"{key}: relative RMS error {r[key]:.2e}"


def test_replicas_fold_into_one_launch_each_way_under_interpreter(results):
    r = results["vmap"]
    assert r["launches"] == ["swiglu_forward_kernel", "swiglu_backward_kernel"]
    assert r["h"] < TOLERANCE["float32"] and r["dgv"] < TOLERANCE["float32"]


def test_the_ffn_layer_runs_on_the_kernels_under_interpreter(results):
    r = results["layer"]
    assert r["launches"] == ["swiglu_forward_kernel", "swiglu_backward_kernel"]
    assert max(r["errors"]) < 1e-5, r["errors"]  # output, input gradient, the three weights' gradients


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_kernels_compile_for_sm90(dtype):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from decaylab.ops.triton import swiglu as kernels

    cases = ((kernels.swiglu_forward_kernel, ["gv", "h"]), (kernels.swiglu_backward_kernel, ["gv", "dh", "dgv"]))
    for kernel, pointers in cases:
        types = {**{p: f"*{dtype}" for p in pointers}, "N": "i32", "H": "i32", "BLOCK": "constexpr", "ROWS": "constexpr"}
        attrs = {(i,): [["tt.divisibility", 16]] for i in range(len(pointers) + 2)}  # H = 2048 at the 160m width
        source = ASTSource(kernel, types, {"BLOCK": kernels.BLOCK, "ROWS": kernels.ROWS}, attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": kernels.NUM_WARPS})
        assert compiled.asm.get("cubin"), "no machine code"
        if dtype != "fp32":
            assert "ld.global.v4" in compiled.asm["ptx"] or "ld.global.v2" in compiled.asm["ptx"], "unvectorized loads"


def _gpu_case(shape, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    gv = (torch.randn(shape, device="cuda", generator=g) * 2).to(dtype)
    dh = torch.randn(*shape[:-1], shape[-1] // 2, device="cuda", generator=g).to(dtype)
    return gv, dh


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_kernels_match_the_formula_on_a_gpu(dtype):
    gv, dh = _gpu_case((8, 2048, 4096), dtype)
    x = gv.clone().requires_grad_()
    h = op.swiglu(x)
    h.backward(dh)
    ref = gv.double().requires_grad_()
    want = op.swiglu_reference(ref)
    want.backward(dh.double())
    tolerance = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 5e-3}[dtype]
    for name, a, b in (("h", h, want), ("dgv", x.grad, ref.grad)):
        assert a.dtype == dtype and a.isfinite().all(), name
        err = ((a.double() - b).norm() / b.norm()).item()
        assert err < tolerance, f"{name}: relative RMS error {err:.2e}"


@pytest.mark.gpu
def test_kernels_replay_in_a_cuda_graph():
    gv, dh = _gpu_case((3, 1000, 2 * 700), torch.bfloat16, seed=1)
    eager = gv.clone().requires_grad_()
    op.swiglu(eager).backward(dh)
    x = gv.clone().requires_grad_()
    op.swiglu(x).backward(dh)  # compiled before the capture
    x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        h = op.swiglu(x)
        h.backward(dh)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(h, op.swiglu(eager.detach())) and torch.equal(x.grad, eager.grad)


def test_torch_compile_traces_one_graph_with_one_kernel_each_way(monkeypatch):
    def loss(gv):
        return (op.swiglu(gv) * 1.5).sum()

    with op.use_kernels(True):
        assert dynamo_kernel_launches(loss, torch.randn(2, 9, 32, requires_grad=True), monkeypatch=monkeypatch) == (1, 1)
