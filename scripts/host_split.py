"""Where an eager forward+backward of the triton op spends host time, at B4·T2048·H16·D128 with scalar decay (the
shape whose eager call is bound by the host).

Calls are queued back to back (the GPU keeps up, so each call's time is the host's); per call, µs: the forward
(with grad), the backward, and inside it ``chunk_parallel_backward`` (the backward function's Python, buffers and
launches). An ``autograd.Function`` that doubles 64 elements gives the autograd engine's own cost on this host.
Two rounds; ``.backward`` and ``torch.autograd.grad`` both.

    python scripts/host_split.py
"""

import time

import torch

import decaylab.ops.triton.function as function
from decaylab.bench.kernel_timing import Shape, leaves_of, make_inputs
from decaylab.ops import BACKENDS

op = BACKENDS.get("triton")
inputs = make_inputs(Shape.parse("4x2048x16x128"), False, torch.device("cuda"))
leaves, do = leaves_of(inputs), inputs["do"]
shares: dict[str, float] = {}


class Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


x = torch.randn(64, device="cuda", requires_grad=True)
ones = torch.ones(64, device="cuda")
untimed_backward = function.chunk_parallel_backward


def timed_backward(*args, **kwargs):
    start = time.perf_counter()
    result = untimed_backward(*args, **kwargs)
    shares["chunk_parallel_backward"] = shares.get("chunk_parallel_backward", 0.0) + time.perf_counter() - start
    return result


function.chunk_parallel_backward = timed_backward


def run(name: str, call, n: int = 300) -> None:
    for _ in range(10):
        call({"fwd": 0.0, "bwd": 0.0})
    torch.cuda.synchronize()
    shares.clear()
    parts = {"fwd": 0.0, "bwd": 0.0}
    start = time.perf_counter()
    for _ in range(n):
        call(parts)
    total = time.perf_counter() - start
    torch.cuda.synchronize()
    per_call = {key: f"{value / n * 1e6:.0f}" for key, value in {**parts, **shares}.items()}
    print(name, f"total {total / n * 1e6:.0f} us", per_call, flush=True)


def double(parts):
    t0 = time.perf_counter()
    y = Double.apply(x)
    t1 = time.perf_counter()
    y.backward(ones)
    t2 = time.perf_counter()
    x.grad = None
    parts["fwd"] += t1 - t0
    parts["bwd"] += t2 - t1


def op_call(backward):
    """A forward+backward of the op with ``backward(o)`` taking the gradients, timed in ``parts``."""

    def call(parts):
        t0 = time.perf_counter()
        o = op(*leaves)[0]
        t1 = time.perf_counter()
        backward(o)
        t2 = time.perf_counter()
        for leaf in leaves:
            leaf.grad = None
        parts["fwd"] += t1 - t0
        parts["bwd"] += t2 - t1

    return call


for _ in range(2):
    run("trivial Function", double)
    run("op .backward", op_call(lambda o: o.backward(do)))
    run("op autograd.grad", op_call(lambda o: torch.autograd.grad(o, leaves, do)))
