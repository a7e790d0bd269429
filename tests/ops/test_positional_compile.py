"""The positional kernels without a GPU: compiled for sm_90 down to machine code, and traced by torch.compile.

The launches of a forward and backward are captured on CPU tensors instead of run, then each distinct kernel is
compiled ahead of time by Triton's pipeline (ptxas included). Its PTX must hold no fused multiply-add: the kernels
promise the torch code's rounding, product by product. And torch.compile must trace an encoding, forward and
backward, into one graph with one kernel each way (no graph break), as it does the attention kernels.
"""

from __future__ import annotations

import re

import pytest
import torch

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

from decaylab.layers.positional import CosineEncoding, RotaryEncoding
from decaylab.ops import positional
from decaylab.ops.triton import positional as kernels
from tests.ops.helpers import dynamo_kernel_launches

TARGET = GPUTarget("cuda", 90, 32)
TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
ENCODINGS = {"rope": RotaryEncoding, "lrpe": CosineEncoding}


def _capture(kind: str, K: int, dtype: torch.dtype, monkeypatch) -> list[tuple]:
    """The kernel launches of one forward and backward through the layer's encoding, q strided (a slice of a wider
    projection)."""
    captured = []
    monkeypatch.setattr(JITFunction, "__getitem__",
                        lambda fn, grid: lambda *args, **kw: captured.append((fn, args, dict(kw))))
    monkeypatch.setattr(kernels, "interpreter_active", lambda: True)  # CPU tensors are fine: nothing runs
    q = torch.randn(2, 300, 4, 3 * K).to(dtype)[..., :K].requires_grad_()
    k = torch.randn(2, 300, 4, K).to(dtype).requires_grad_()
    with positional.use_kernels(True):
        qe, ke = ENCODINGS[kind](K)(q, k, 5)
    (qe.float().sum() + ke.float().sum()).backward()
    return captured


def _compile(fn: JITFunction, args: tuple, kwargs: dict):
    """Compile one captured launch, specialized as a launch on a GPU would be: pointers (fresh allocations) and the
    integers that are multiples of 16 marked divisible by 16, which lets the compiler vectorize the accesses."""
    options = {key: kwargs.pop(key) for key in ("num_warps", "num_stages", "enable_fp_fusion") if key in kwargs}
    assert options.get("enable_fp_fusion") is False, "the positional kernels must be launched unfused"
    bound = dict(zip(fn.arg_names, args), **kwargs)
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        value = bound[param.name]
        if param.is_constexpr:
            signature[param.name], constexprs[param.name] = "constexpr", value
            continue
        signature[param.name] = "*" + TYPES[value.dtype] if isinstance(value, torch.Tensor) else "i32"
        if isinstance(value, torch.Tensor) or value % 16 == 0:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=TARGET, options=options)


@pytest.mark.parametrize("kind", list(ENCODINGS))
@pytest.mark.parametrize("K, dtype", [(32, torch.bfloat16), (64, torch.float16), (48, torch.float32)])
def test_kernels_compile_for_sm90_without_fused_multiply_adds(monkeypatch, kind, K, dtype):
    launches = _capture(kind, K, dtype, monkeypatch)
    assert [kw["BACKWARD"] for _, _, kw in launches] == [False, True]  # one launch each way, for q and k together
    for fn, args, kwargs in launches:
        kernel = _compile(fn, args, kwargs)
        ptx = kernel.asm["ptx"]
        assert kernel.asm.get("cubin"), "no machine code"
        assert not re.search(r"\bfma\.", ptx), "a fused multiply-add would round unlike the torch code"
        assert re.search(r"\bmul\.(rn\.)?f32\b", ptx)
        assert re.search(r"ld\.global\.v4\.b32", ptx), "the loads of aligned rows should be 16-byte vectors"
        if dtype != torch.float32:  # round to nearest even on the way out, like torch's casts
            ptx_type = {torch.bfloat16: "bf16", torch.float16: "f16"}[dtype]
            assert re.search(rf"cvt\.rn\.{ptx_type}(x2)?\.f32", ptx), "the output cast must round to nearest"


@pytest.mark.parametrize("kind", list(ENCODINGS))
def test_torch_compile_traces_one_graph_with_one_kernel_each_way(monkeypatch, kind):
    """Dynamo's view of the op (no kernel runs); the GPU test runs the compiled op."""
    monkeypatch.setattr(kernels, "interpreter_active", lambda: True)
    encoding = ENCODINGS[kind](16)

    def loss(q, k):
        qe, ke = encoding(q, k, 3)
        return (qe * 1.5).sum() + (ke * ke).sum()

    q, k = (torch.randn(2, 9, 2, 16, requires_grad=True) for _ in range(2))
    with positional.use_kernels(True):
        assert dynamo_kernel_launches(loss, q, k, monkeypatch=monkeypatch) == (1, 1)
