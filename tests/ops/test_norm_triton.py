"""The norm kernels on a GPU (``gpu`` marker): forward and every gradient against the float64 reference at real
sizes, the launch count, autocast, CUDA-graph replay, and the layers on CUDA against the layers on CPU.

The kernels sum in another order than torch, so they match the reference to rounding, not bit for bit. The same
checks on tiny shapes run on CPU under the interpreter (tests/ops/test_norm_ops.py).
"""

from __future__ import annotations

import pytest
import torch

from decaylab.layers.norms import GatedRMSNorm, RMSNorm
from decaylab.ops import norm

pytestmark = pytest.mark.gpu

# relative RMS error against the float64 reference, by the dtype of the tensor compared (one rounding on GPUs)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 6e-3}


def _inputs(shape, dtype, gated, seed=0, weight_dtype=torch.float32):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, device="cuda", generator=g).to(dtype)
    gate = torch.randn(shape, device="cuda", generator=g).to(dtype) if gated else None
    weight = (1 + 0.5 * torch.randn(shape[-1], device="cuda", generator=g)).to(weight_dtype)
    dy = torch.randn(shape, device="cuda", generator=g).to(dtype)
    return x, weight, gate, dy


def _run(fn, x, weight, gate, dy):
    """(y, dx, dweight[, dgate]) of fn(x, weight, 1e-5, gate) with upstream gradient dy."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, gate) if t is not None]
    y = fn(*leaves[:2], 1e-5, *leaves[2:])
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


def _reference(x, weight, gate, dy):
    return _run(norm.rms_norm_reference, *(None if t is None else t.double() for t in (x, weight, gate)), dy.double())


def _assert_close(names, got, want):
    for name, a, b in zip(names, got, want):
        assert a.shape == b.shape and a.isfinite().all(), name
        err = ((a.double() - b.double()).norm() / b.double().norm()).item()
        assert err < TOLERANCE[a.dtype], f"{name} ({a.dtype}): relative RMS error {err:.2e}"


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(2048, 256), (4, 128, 1024), (3, 50, 1000), (64, 8192), (5, 48)])
def test_kernels_match_the_reference_on_gpu(shape, dtype, gated):
    x, weight, gate, dy = _inputs(shape, dtype, gated)
    got = _run(norm.rms_norm, x, weight, gate, dy)
    assert [t.dtype for t in got] == [dtype, dtype, torch.float32] + [dtype] * gated
    _assert_close(["y", "dx", "dweight", "dgate"], got, _reference(x, weight, gate, dy))


def _cuda_kernels(fn) -> list[str]:
    """Names of the CUDA kernels that run in fn()."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@pytest.mark.parametrize("gated", [False, True])
def test_one_kernel_forward_and_two_backward(gated):
    x, weight, gate, dy = _inputs((4, 128, 256), torch.bfloat16, gated)
    _run(norm.rms_norm, x, weight, gate, dy)  # compiled before the count
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, gate) if t is not None]
    out = []
    forward = _cuda_kernels(lambda: out.append(norm.rms_norm(*leaves[:2], 1e-5, *leaves[2:])))
    backward = _cuda_kernels(lambda: torch.autograd.grad(out[0], leaves, dy))
    assert len(forward) == 1 and "forward" in forward[0], forward
    assert len(backward) == 2 and "backward" in backward[0], backward  # the kernel, then the weight's sum
    frozen = _cuda_kernels(lambda: torch.autograd.grad(norm.rms_norm(leaves[0], weight, 1e-5), leaves[0], dy))
    assert len(frozen) == 2, frozen  # a weight without gradient: forward and backward kernels alone


@pytest.mark.parametrize("gated", [False, True])
def test_layers_under_autocast_match_the_torch_code(gated):
    """Under bfloat16 autocast a layer's input comes in bfloat16 while its weight stays float32: the output is
    bfloat16 and the weight's gradient float32, as on the torch code."""
    torch.manual_seed(0)
    proj = torch.nn.Linear(256, 512 if gated else 256, device="cuda")
    module = (GatedRMSNorm if gated else RMSNorm)(256).cuda()
    with torch.no_grad():
        module.weight.normal_(1.0, 0.3)
    source = torch.randn(8, 100, 256, device="cuda")
    dy = torch.randn(8, 100, 256, device="cuda").bfloat16()

    def run():
        inp = source.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = proj(inp)
            y = module(*h.chunk(2, dim=-1)) if gated else module(h)
        grads = torch.autograd.grad(y, [inp, module.weight], dy)
        return [y, *grads]

    got = run()
    with norm.use_kernels(False):
        want = run()
    assert [t.dtype for t in got] == [t.dtype for t in want] == [torch.bfloat16, torch.float32, torch.float32]
    for name, a, b in zip(("y", "dinput", "dweight"), got, want):
        err = ((a.double() - b.double()).norm() / b.double().norm()).item()
        assert err < 1e-2, f"{name}: relative RMS error {err:.2e} against the torch code"


@pytest.mark.parametrize("gated", [False, True])
def test_kernels_replay_in_a_cuda_graph(gated):
    x, weight, gate, dy = _inputs((4, 257, 512), torch.bfloat16, gated)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, gate) if t is not None]

    def step():
        y = norm.rms_norm(*leaves[:2], 1e-5, *leaves[2:])
        return [y, *torch.autograd.grad(y, leaves, dy)]

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm up: kernels compiled
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        for t in (*leaves, dy):  # new values in the captured inputs, then a replay
            t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    eager = step()
    for name, a, b in zip(("y", "dx", "dweight", "dgate"), captured, eager):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layers_on_cuda_match_the_layers_on_cpu(dtype, gated):
    torch.manual_seed(1)
    module = (GatedRMSNorm if gated else RMSNorm)(384)
    with torch.no_grad():
        module.weight.normal_(1.0, 0.3)
    x, gate, dy = (torch.randn(3, 70, 384).to(dtype) for _ in range(3))

    def run(device):
        layer = module.to(device)
        leaves = [t.to(device).requires_grad_() for t in ((x, gate) if gated else (x,))]
        y = layer(*leaves)
        grads = torch.autograd.grad(y, [*leaves, layer.weight], dy.to(device))
        return [t.cpu() for t in (y, *grads)]

    got = run("cuda")
    want = run("cpu")
    names = ["y", "dx", "dgate", "dweight"] if gated else ["y", "dx", "dweight"]
    for name, a, b in zip(names, got, want):
        assert a.dtype == b.dtype, name
        err = ((a.double() - b.double()).norm() / b.double().norm()).item()
        # bfloat16: the CPU layer rounds the gated product to bfloat16, the kernels keep it in float32
        assert err < (1e-5 if a.dtype == torch.float32 and dtype == torch.float32 else 1e-2), f"{name}: {err:.2e}"
