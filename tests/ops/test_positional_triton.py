"""The positional kernels against the torch code: under TRITON_INTERPRET=1 on CPU, and on a GPU (``gpu`` marker).

The interpreter must be on before triton is imported and the rest of the suite imports triton without it, so the
cases run in one child process that prints one JSON line per case. Each case runs a layer's encoding
(RotaryEncoding, CosineEncoding) twice on the same random inputs and upstream gradients, on the torch code and on
the kernels, and compares outputs and gradients. The kernels compute the torch code's float32 products and sums
unfused, so float32 and float16 results are the same bits; the interpreter truncates float32 to bfloat16 where torch
and the GPU round to nearest, so bfloat16 results may differ by one unit in the last place there (on a GPU they are
equal: the GPU tests below).
"""

from __future__ import annotations

import pytest

from tests.ops.helpers import run_under_interpreter

pytest.importorskip("triton")

# name -> (encoding, B, T, H, K, offset, dtype, layout, gradients)
# layout: contiguous; slice (q and k are channel slices of a wider projection: strided rows); transposed (views of
# [B, H, T, K]); channel-strided (every other channel: copied first); mixed (k in float32 whatever q's dtype);
# grad-transposed (upstream gradients are views of [B, H, T, W]).
# gradients: qk; q or k (the other needs none); q-out (only q's output reaches the loss); none (torch.no_grad).
CASES = {
    "rope-B2-T37-H3-K32-off5-fp32-slice-qk": ("rope", 2, 37, 3, 32, 5, "float32", "slice", "qk"),
    "rope-B1-T1-H2-K16-off9-fp32-decode": ("rope", 1, 1, 2, 16, 9, "float32", "contiguous", "none"),
    "rope-B2-T20-H2-K64-off0-bf16-transposed-qk": ("rope", 2, 20, 2, 64, 0, "bfloat16", "transposed", "qk"),
    "rope-B1-T70-H1-K16-off3-fp16-k": ("rope", 1, 70, 1, 16, 3, "float16", "contiguous", "k"),
    "rope-B2-T13-H4-K32-off1-bf16-q-out": ("rope", 2, 13, 4, 32, 1, "bfloat16", "contiguous", "q-out"),
    "rope-B1-T9-H2-K48-off2-fp32-channel-strided-q": ("rope", 1, 9, 2, 48, 2, "float32", "channel-strided", "q"),
    "rope-B2-T33-H2-K32-off4-fp32-grad-transposed": ("rope", 2, 33, 2, 32, 4, "float32", "grad-transposed", "qk"),
    "rope-B1-T17-H2-K16-off0-bf16-mixed": ("rope", 1, 17, 2, 16, 0, "bfloat16", "mixed", "qk"),
    "rope-B1-T300-H2-K16-off7-fp32-slice-qk": ("rope", 1, 300, 2, 16, 7, "float32", "slice", "qk"),  # 2 row blocks
    "lrpe-B2-T37-H3-K32-off5-fp32-slice-qk": ("lrpe", 2, 37, 3, 32, 5, "float32", "slice", "qk"),
    "lrpe-B1-T1-H2-K16-off9-bf16-decode": ("lrpe", 1, 1, 2, 16, 9, "bfloat16", "contiguous", "none"),
    "lrpe-B2-T20-H2-K64-off0-bf16-transposed-qk": ("lrpe", 2, 20, 2, 64, 0, "bfloat16", "transposed", "qk"),
    "lrpe-B1-T70-H1-K16-off3-fp16-q": ("lrpe", 1, 70, 1, 16, 3, "float16", "contiguous", "q"),
    "lrpe-B2-T13-H4-K32-off1-fp32-q-out": ("lrpe", 2, 13, 4, 32, 1, "float32", "contiguous", "q-out"),
    "lrpe-B1-T9-H2-K24-off2-fp32-channel-strided-k": ("lrpe", 1, 9, 2, 24, 2, "float32", "channel-strided", "k"),
    "lrpe-B2-T33-H2-K16-off100-bf16-grad-transposed": ("lrpe", 2, 33, 2, 16, 100, "bfloat16", "grad-transposed",
                                                       "qk"),
    "lrpe-B1-T17-H2-K32-off0-fp16-mixed": ("lrpe", 1, 17, 2, 32, 0, "float16", "mixed", "qk"),
    "lrpe-B1-T130-H1-K64-off0-bf16-qk": ("lrpe", 1, 130, 1, 64, 0, "bfloat16", "contiguous", "qk"),  # 5 row blocks
}
# launches per case: forward (both tensors), then backward (the tensors whose gradient is asked for)
LAUNCHES = {"qk": [2, 2], "q": [2, 1], "k": [2, 1], "q-out": [2, 2], "none": [2]}

CHILD = r"""
import json, sys, torch
import decaylab.ops.triton.positional as kernels
from decaylab.layers.positional import CosineEncoding, RotaryEncoding
from decaylab.ops.positional import use_kernels

launches = []
launch = kernels._launch
kernels._launch = lambda pairs, *args, **kw: (launches.append(len(pairs)), launch(pairs, *args, **kw))[1]


def inputs(B, T, H, K, dtype, layout, g):
    def one(dt):
        if layout == "slice":
            return torch.randn(B, T, H, 3 * K, generator=g).to(dt)[..., K : 2 * K]
        if layout == "transposed":
            return torch.randn(B, H, T, K, generator=g).to(dt).transpose(1, 2)
        if layout == "channel-strided":
            return torch.randn(B, T, H, 2 * K, generator=g).to(dt)[..., ::2]
        return torch.randn(B, T, H, K, generator=g).to(dt)
    return one(dtype), one(torch.float32 if layout == "mixed" else dtype)


def run(module, q, k, offset, upstream, grads):
    q = q.detach().requires_grad_(grads in ("qk", "q", "q-out"))  # detach keeps the strides
    k = k.detach().requires_grad_(grads in ("qk", "k", "q-out"))
    with torch.set_grad_enabled(grads != "none"):
        qe, ke = module(q, k, offset)
    out = {"q_out": qe.detach(), "k_out": ke.detach()}
    wrt = [t for t in (q, k) if t.requires_grad]
    if wrt:
        used = {"qk": (0, 1), "q": (0,), "q-out": (0,), "k": (1,)}[grads]  # outputs in the loss
        got = torch.autograd.grad([(qe, ke)[i] for i in used], wrt, [upstream[i] for i in used], allow_unused=True)
        names = [n for n, t in (("dq", q), ("dk", k)) if t.requires_grad]
        for name, t, d in zip(names, wrt, got):
            out[name] = torch.zeros_like(t) if d is None else d  # an unused input: zero gradient
    return out


cases = json.loads(sys.argv[1])
for name, (kind, B, T, H, K, offset, dtype, layout, grads) in cases.items():
    g = torch.Generator().manual_seed(len(name) * 1000 + K)
    module = (RotaryEncoding if kind == "rope" else CosineEncoding)(K)
    q, k = inputs(B, T, H, K, getattr(torch, dtype), layout, g)
    W = K if kind == "rope" else 2 * K
    upstream = []
    for t in (q, k):
        d = torch.randn(B, H, T, W, generator=g).to(t.dtype)
        upstream.append(d.transpose(1, 2) if layout == "grad-transposed" else d.transpose(1, 2).contiguous())
    with use_kernels(False):
        want = run(module, q, k, offset, upstream, grads)
    launches.clear()
    with use_kernels(True):
        got = run(module, q, k, offset, upstream, grads)
    report = {"launches": list(launches), "tensors": {}, "strides": [q.stride(), k.stride()]}
    for tensor, ref in want.items():
        out = got[tensor]
        ulp = 2.0 ** -7 * ref.double().abs().clamp_min(1e-30)  # one bfloat16 unit in the last place (or less)
        report["tensors"][tensor] = {
            "exact": bool(torch.equal(out, ref)), "ulps": float(((out.double() - ref.double()).abs() / ulp).max()),
            "dtype": str(out.dtype), "want_dtype": str(ref.dtype), "shape_ok": out.shape == ref.shape,
            "finite": bool(out.isfinite().all()), "nonzero": bool(ref.ne(0).any()),
        }
    report["gradients"] = sorted(t for t in got if t.startswith("d"))
    print(json.dumps({name: report}))
"""


@pytest.fixture(scope="module")
def results() -> dict:
    return run_under_interpreter(CHILD, CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_kernels_match_the_torch_code_under_interpreter(results, case):
    grads = CASES[case][-1]
    r = results[case]
    assert r["launches"] == LAUNCHES[grads], "one launch forward for q and k, one backward for the gradients asked"
    want = {"qk": ["dk", "dq"], "q": ["dq"], "k": ["dk"], "q-out": ["dk", "dq"], "none": []}[grads]
    assert r["gradients"] == want
    for tensor, t in r["tensors"].items():
        assert t["finite"] and t["shape_ok"] and t["dtype"] == t["want_dtype"], f"{tensor}: {t}"
        if grads == "q-out" and tensor == "dk":
            assert t["exact"], "k's output is unused: its gradient must be exactly zero"
            continue
        assert t["nonzero"], f"{tensor}: the reference is all zeros (the case tests nothing)"
        if t["dtype"] == "torch.bfloat16":  # the interpreter truncates where torch rounds to nearest
            assert t["ulps"] <= 1.0, f"{tensor}: {t['ulps']:.2f} bfloat16 units off the torch code"
        else:
            assert t["exact"], f"{tensor}: not the torch code's bits (max {t['ulps']:.3g} bf16 units)"


# name -> model overrides: a tiny model (head dim 32) trained two steps in float32 on each path
MODELS = {
    "linear-rope-shared-vector-decay": {"mixer": "linear", "pos": "rope", "decay.share": True,
                                        "decay.granularity": "vector"},
    "linear-lrpe": {"mixer": "linear", "pos": "lrpe"},
    "softmax-rope": {"mixer": "softmax", "pos": "rope"},
}

MODEL_CHILD = r"""
import copy, json, sys, torch
import decaylab.ops.triton.positional as kernels
from decaylab import DecayLM, ModelConfig
from tests.ops.helpers import train_steps
from decaylab.ops.positional import use_kernels

launches = []
launch = kernels._launch
kernels._launch = lambda pairs, *args, **kw: (launches.append(len(pairs)), launch(pairs, *args, **kw))[1]

for name, overrides in json.loads(sys.argv[1]).items():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", {"d_model": 64, "ffn_dim": 128, **overrides})
    model = DecayLM(cfg)
    twin = copy.deepcopy(model)
    batches = [torch.randint(0, cfg.vocab_size, (2, 40)) for _ in range(2)]
    with use_kernels(False):
        want = train_steps(model, batches)
    launches.clear()
    with use_kernels(True):
        got = train_steps(twin, batches)
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    print(json.dumps({name: {"losses": got == want, "parameters": same, "launches": len(launches),
                             "expected": 2 * cfg.n_layers * len(batches)}}))
"""


@pytest.fixture(scope="module")
def model_results() -> dict:
    return run_under_interpreter(MODEL_CHILD, MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_model_trains_the_same_on_the_kernels_under_interpreter(model_results, name):
    """float32: the same losses and parameters, bit for bit, after two optimizer steps."""
    r = model_results[name]
    assert r["launches"] == r["expected"], "every layer's encoding ran on the kernels, forward and backward"
    assert r["losses"] and r["parameters"]


# ------------------------------------------------------------------------------------------------------- on a GPU
def _encoding(kind, head_dim):
    from decaylab.layers.positional import CosineEncoding, RotaryEncoding

    return (RotaryEncoding if kind == "rope" else CosineEncoding)(head_dim)


def _run_gpu(kind, q, k, offset, upstream, module=None):
    import torch

    module = module or _encoding(kind, q.shape[-1])
    q, k = (t.detach().clone().requires_grad_() for t in (q, k))
    qe, ke = module(q, k, offset)
    dq, dk = torch.autograd.grad([qe, ke], [q, k], upstream)
    return qe, ke, dq, dk


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["rope", "lrpe"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("K", [32, 64, 128])
def test_kernels_give_the_torch_code_bits_on_gpu(kind, dtype, K):
    import torch

    from decaylab.ops.positional import use_kernels
    from decaylab.ops.triton import positional as kernels

    g = torch.Generator(device="cuda").manual_seed(K)
    dt = getattr(torch, dtype)
    B, T, H, W = 8, 1000, 8, K if kind == "rope" else 2 * K
    q = torch.randn(B, T, H, 3 * K, device="cuda", generator=g).to(dt)[..., :K]  # a slice of a fused projection
    k = torch.randn(B, T, H, K, device="cuda", generator=g).to(dt)
    upstream = [torch.randn(B, T, H, W, device="cuda", generator=g).to(dt) for _ in range(2)]
    with use_kernels(False):
        want = _run_gpu(kind, q, k, 37, upstream)
    calls = []
    launch = kernels._launch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "_launch", lambda pairs, *a, **kw: (calls.append(len(pairs)), launch(pairs, *a, **kw)))
        got = _run_gpu(kind, q, k, 37, upstream)
    assert calls == [2, 2]
    for name, a, b in zip(("q", "k", "dq", "dk"), got, want):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{name}: max difference {(a.float() - b.float()).abs().max()}"


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["rope", "lrpe"])
def test_kernels_replay_in_a_cuda_graph(kind):
    import torch

    from decaylab.ops.positional import use_kernels

    B, T, H, K = 4, 257, 4, 32
    W = K if kind == "rope" else 2 * K
    q, k = (torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    upstream = [torch.randn(B, T, H, W, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    module = _encoding(kind, K)  # one module, as in a model: its angle table is built by the warm-up, not captured
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _run_gpu(kind, q, k, 3, upstream, module)  # warm up: kernels compiled, angle tables built
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _run_gpu(kind, q, k, 3, upstream, module)
    for t in (q, k, *upstream):  # new values in the captured inputs, then a replay
        t.copy_(torch.randn_like(t))
    graph.replay()
    with use_kernels(False):
        want = _run_gpu(kind, q, k, 3, upstream)
    for name, a, b in zip(("q", "k", "dq", "dk"), captured, want):
        assert torch.equal(a, b), name


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["rope", "lrpe"])
def test_compiled_encoding_matches_eager(kind):
    import torch

    from decaylab.layers.positional import CosineEncoding, RotaryEncoding
    from decaylab.ops.positional import use_kernels

    module = (RotaryEncoding if kind == "rope" else CosineEncoding)(64)

    def loss(q, k):
        qe, ke = module(q, k, 5)
        return (qe.float() * 1.5).sum() + (ke.float() * ke.float()).sum()

    q, k = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    compiled = torch.compile(loss, fullgraph=True)(q, k)
    got = torch.autograd.grad(compiled, [q, k])
    with use_kernels(False):
        eager = loss(q, k)
        want = torch.autograd.grad(eager, [q, k])
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-3)  # sums in another order
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)  # bfloat16 defaults: the compiled loss may form its gradients otherwise
