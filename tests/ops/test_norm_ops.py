"""The norm op on CPU: the layers keep their torch numerics, the dispatch, the kernels' checks, and the kernels
themselves under TRITON_INTERPRET=1 (forward and every gradient against the float64 reference).

The interpreter must be on before triton is imported and the rest of the suite imports triton without it, so the
kernel cases run in one child process that prints one JSON line per case (as tests/ops/test_positional_triton.py
does). The interpreter truncates float32 to bfloat16 where a GPU rounds to nearest, hence bfloat16's looser
tolerance here; tests/ops/test_norm_triton.py runs the same checks on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from decaylab.layers.norms import GatedRMSNorm, RMSNorm
from decaylab.ops import norm
from tests.ops.helpers import run_under_interpreter

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _formula(x, weight, eps, gate=None):
    """The layers' torch code, written out: the gated product is formed (and rounded) in the inputs' dtype."""
    if gate is not None:
        x = x * torch.sigmoid(gate)
    dtype = torch.promote_types(x.dtype, torch.float32)
    y = x.to(dtype)
    y = y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (y * weight.to(dtype)).to(x.dtype)


def _values_and_grads(fn, x, weight, gate=None, seed=0):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, gate) if t is not None]
    y = fn(*leaves[:2], 1e-5, *leaves[2:])
    dy = torch.randn(tuple(y.shape), generator=torch.Generator().manual_seed(seed)).to(y.dtype)
    return [y.detach(), *torch.autograd.grad(y, leaves, dy)]


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, gate = (torch.randn(shape, generator=g).to(dtype) for _ in range(2))
    return x, 1 + 0.5 * torch.randn(shape[-1], generator=g), gate


def _layer(module_type, dim):
    """The layer as a function of (x, weight, eps, gate): its weight is the one passed (eps is the default)."""
    module = module_type(dim)
    return lambda x, w, eps, *gate: torch.func.functional_call(module, {"weight": w}, (x, *gate))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gated", [False, True])
def test_layers_on_cpu_keep_their_bits(dtype, gated):
    """Forward and gradients of the layers on CPU are their torch code's, bit for bit, in every dtype."""
    x, weight, gate = _inputs((3, 5, 24), dtype)
    gate = gate if gated else None
    module = _layer(GatedRMSNorm if gated else RMSNorm, weight.shape[0])
    got = _values_and_grads(module, x, weight, gate)
    want = _values_and_grads(_formula, x, weight, gate)
    for name, a, b in zip(("y", "dx", "dweight", "dgate"), got, want):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_is_the_layer_formula(dtype):
    """The plain reference is the formula in every dtype; the gated one where the inputs are float32 or float64."""
    x, weight, gate = _inputs((4, 40), dtype, seed=1)
    for a, b in zip(_values_and_grads(norm.rms_norm_reference, x, weight),
                    _values_and_grads(_formula, x, weight)):  # fmt: skip
        assert torch.equal(a, b)
    gated = zip(_values_and_grads(norm.rms_norm_reference, x, weight, gate),
                _values_and_grads(_formula, x, weight, gate))  # fmt: skip
    for a, b in gated:
        if dtype in (torch.float32, torch.float64):
            assert torch.equal(a, b)
        else:  # the reference keeps the product in float32: a rounding apart
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_gated_reference_forms_the_product_in_float32():
    x, weight, gate = _inputs((6, 32), torch.bfloat16, seed=2)
    want = _formula(x.float() * torch.sigmoid(gate.float()), weight, 1e-5).to(torch.bfloat16)
    assert torch.equal(norm.rms_norm_reference(x, weight, 1e-5, gate), want)
    mixed = norm.rms_norm_reference(x.float(), weight, 1e-5, gate)  # float32 x, bfloat16 gate: float32 out
    assert mixed.dtype == torch.float32


class _NoKernels:
    """Stands in for the Triton module: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the kernels ran ({name}) where the torch code should")


def test_cpu_tensors_take_the_torch_code(monkeypatch):
    monkeypatch.setattr(norm, "_triton", _NoKernels())
    x, weight, gate = _inputs((2, 16), torch.float32)
    RMSNorm(16)(x), GatedRMSNorm(16)(x, gate), norm.rms_norm(x, weight, 1e-5, gate)
    with norm.use_kernels(False):
        RMSNorm(16)(x), GatedRMSNorm(16)(x, gate)


@pytest.fixture
def triton_norm():
    return pytest.importorskip("decaylab.ops.triton.norm", exc_type=ImportError)


def test_kernels_take_only_what_they_can_run(triton_norm):
    x, weight, gate = _inputs((3, 16), torch.float32)
    wide = triton_norm.MAX_DIM + 1
    assert not norm.kernels_take(x, weight, gate)  # CPU, default mode
    with norm.use_kernels(True):
        assert norm.kernels_take(x, weight) and norm.kernels_take(x, weight, gate)
        assert norm.kernels_take(x.bfloat16(), weight, gate.half())
        assert not norm.kernels_take(x.double(), weight)
        assert not norm.kernels_take(x, weight.double())
        assert not norm.kernels_take(x, weight, gate[:1])  # a broadcast gate: torch code
        assert not norm.kernels_take(x[:0], weight)
        assert not norm.kernels_take(torch.ones(2, wide), torch.ones(wide))
        assert not norm.kernels_take(x, weight[:8])
    with norm.use_kernels(False):
        assert not norm.kernels_take(x, weight)


def test_kernels_on_cpu_say_how_to_run_them(triton_norm, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, weight, _ = _inputs((2, 8), torch.float32)
    with pytest.raises(ValueError, match="run on CUDA tensors.*TRITON_INTERPRET=1"):
        triton_norm.rms_norm(x, weight, 1e-5)
    with norm.use_kernels(True), pytest.raises(ValueError, match="run on CUDA tensors"):
        RMSNorm(8)(x)


@pytest.mark.parametrize("make, match", [
    (lambda x, w, g: (x, w[:4], None), "weight must be \\[D\\]"),
    (lambda x, w, g: (x.double(), w, None), "float16, bfloat16 or float32"),
    (lambda x, w, g: (x, w, g.double()), "float16, bfloat16 or float32"),
    (lambda x, w, g: (x, w, g[:1]), "gate must have x's shape"),
    (lambda x, w, g: (x[:0], w, None), "non-empty"),
])  # fmt: skip
def test_kernels_reject_bad_inputs_with_the_fix(triton_norm, make, match):
    x, weight, gate = _inputs((2, 8), torch.float32)
    x, weight, gate = make(x, weight, gate)
    with pytest.raises(ValueError, match=match):
        triton_norm.rms_norm(x, weight, 1e-5, gate)


# ------------------------------------------------------------------------------------------ under the interpreter
# name -> (shape, x dtype, gate dtype (None: plain), weight dtype, layout, gradients)
# layout: contiguous; slice (x and gate are channel slices of wider rows); transposed (x and gate are [T, B, D]
# transposed to [B, T, D]: copied to rows); channel-strided (every other channel: copied); grad-strided (the
# upstream gradient is a slice of wider rows).
# gradients: all; x, weight or gate (only that input requires a gradient); none (torch.no_grad).
CASES = {
    "plain-7x48-fp32": ((7, 48), "float32", None, "float32", "contiguous", "all"),
    "plain-2x5x100-fp32-slice": ((2, 5, 100), "float32", None, "float32", "slice", "all"),
    "plain-9x1000-fp32-grad-strided": ((9, 1000), "float32", None, "float32", "grad-strided", "all"),  # 5 tiles
    "plain-3x11x64-bf16": ((3, 11, 64), "bfloat16", None, "float32", "contiguous", "all"),
    "plain-2x13x100-bf16-transposed-x": ((2, 13, 100), "bfloat16", None, "float32", "transposed", "x"),
    "plain-5x48-fp16-weight": ((5, 48), "float16", None, "float32", "contiguous", "weight"),
    "plain-6x32-bf16-bf16-weight": ((6, 32), "bfloat16", None, "bfloat16", "contiguous", "all"),
    "plain-5x3-fp32": ((5, 3), "float32", None, "float32", "contiguous", "all"),
    "plain-2x8192-fp32": ((2, 8192), "float32", None, "float32", "contiguous", "all"),
    "plain-8x64-fp32-no-grad": ((8, 64), "float32", None, "float32", "contiguous", "none"),
    "gated-7x48-fp32": ((7, 48), "float32", "float32", "float32", "contiguous", "all"),
    "gated-2x5x100-bf16-slice": ((2, 5, 100), "bfloat16", "bfloat16", "float32", "slice", "all"),
    "gated-9x1000-fp32-grad-strided": ((9, 1000), "float32", "float32", "float32", "grad-strided", "all"),
    "gated-3x7x64-fp16": ((3, 7, 64), "float16", "float16", "float32", "contiguous", "all"),
    "gated-13x100-bf16-gate": ((13, 100), "bfloat16", "bfloat16", "float32", "contiguous", "gate"),
    "gated-6x48-fp32-x": ((6, 48), "float32", "float32", "float32", "contiguous", "x"),
    "gated-5x64-fp32-bf16-gate-dtype": ((5, 64), "float32", "bfloat16", "float32", "contiguous", "all"),
    "gated-4x32-bf16-channel-strided": ((4, 32), "bfloat16", "bfloat16", "float32", "channel-strided", "all"),
    "gated-3x5x40-bf16-transposed": ((3, 5, 40), "bfloat16", "bfloat16", "float32", "transposed", "all"),
}
TOLERANCE = {"torch.float32": 1e-5, "torch.float16": 2e-3, "torch.bfloat16": 1e-2}  # relative RMS error

CHILD = r"""
import json, sys, torch
import decaylab.ops.triton.norm as kernels
from decaylab.ops.norm import rms_norm, rms_norm_reference, use_kernels

launches = []


class Counted:
    def __init__(self, name, kernel):
        self.name, self.kernel = name, kernel

    def __getitem__(self, grid):
        launches.append(self.name)
        return self.kernel[grid]


kernels.rms_norm_forward_kernel = Counted("forward", kernels.rms_norm_forward_kernel)
kernels.rms_norm_backward_kernel = Counted("backward", kernels.rms_norm_backward_kernel)


def laid_out(shape, dtype, layout, g):
    D = shape[-1]
    if layout == "slice":
        return torch.randn(*shape[:-1], 3 * D, generator=g).to(dtype)[..., D : 2 * D]
    if layout == "transposed":
        return torch.randn(shape[1], shape[0], *shape[2:], generator=g).to(dtype).transpose(0, 1)
    if layout == "channel-strided":
        return torch.randn(*shape[:-1], 2 * D, generator=g).to(dtype)[..., ::2]
    return torch.randn(shape, generator=g).to(dtype)


def run(fn, leaves, grads, dy):
    x, w, gate = leaves
    x, w = x.detach().requires_grad_(grads in ("all", "x")), w.detach().requires_grad_(grads in ("all", "weight"))
    if gate is not None:
        gate = gate.detach().requires_grad_(grads in ("all", "gate"))
    with torch.set_grad_enabled(grads != "none"):
        y = fn(x, w, 1e-5, gate)
    out = {"y": y.detach()}
    named = [(n, t) for n, t in (("dx", x), ("dweight", w), ("dgate", gate)) if t is not None and t.requires_grad]
    if named:
        got = torch.autograd.grad(y, [t for _, t in named], dy)
        out.update({n: d for (n, _), d in zip(named, got)})
    return out


cases = json.loads(sys.argv[1])
for name, (shape, dtype, gate_dtype, weight_dtype, layout, grads) in cases.items():
    g = torch.Generator().manual_seed(len(name))
    x = laid_out(shape, getattr(torch, dtype), layout, g)
    gate = None if gate_dtype is None else laid_out(shape, getattr(torch, gate_dtype), layout, g)
    w = (1 + 0.5 * torch.randn(shape[-1], generator=g)).to(getattr(torch, weight_dtype))
    out_dtype = x.dtype if gate is None else torch.promote_types(x.dtype, gate.dtype)
    dy = torch.randn(*shape[:-1], 2 * shape[-1], generator=g).to(out_dtype)
    dy = dy[..., : shape[-1]] if layout == "grad-strided" else dy[..., : shape[-1]].contiguous()
    launches.clear()
    with use_kernels(True):
        got = run(rms_norm, (x, w, gate), grads, dy)
    want = run(rms_norm_reference, [None if t is None else t.double() for t in (x, w, gate)], grads, dy.double())
    report = {"launches": list(launches), "tensors": {}}
    for tensor, ref in want.items():
        out = got[tensor]
        err = float((out.double() - ref).norm() / ref.norm().clamp_min(1e-30))
        leaf = {"y": out_dtype, "dx": x.dtype, "dweight": w.dtype, "dgate": None if gate is None else gate.dtype}
        report["tensors"][tensor] = {"error": err, "dtype": str(out.dtype), "want_dtype": str(leaf[tensor]),
                                     "shape_ok": out.shape == ref.shape, "finite": bool(out.isfinite().all()),
                                     "nonzero": bool(ref.ne(0).any())}
    print(json.dumps({name: report}))
"""

# then a tiny model (a gated norm in every linear-attention layer, two plain ones per layer and the final one),
# trained two steps in float32 on each path, in the same child (one interpreter start)
CHILD += r"""
import copy
from decaylab import DecayLM, ModelConfig
from tests.ops.helpers import train_steps
from decaylab.layers.norms import RMSNorm


torch.manual_seed(0)
cfg = ModelConfig.from_preset("tiny", {"d_model": 64, "ffn_dim": 128, "mixer": "linear"})
model = DecayLM(cfg)
twin = copy.deepcopy(model)
batches = [torch.randint(0, cfg.vocab_size, (2, 40)) for _ in range(2)]
with use_kernels(False):
    want = train_steps(model, batches)
launches.clear()
with use_kernels(True):
    got = train_steps(twin, batches)
error = max((a - b).abs().max().item() for a, b in zip(model.parameters(), twin.parameters()))
norms = sum(isinstance(m, RMSNorm) for m in model.modules())
print(json.dumps({"model": {"losses": got, "want": want, "parameter_error": error, "launches": launches,
                            "norms": norms, "steps": len(batches)}}))
"""


@pytest.fixture(scope="module")
def results() -> dict:
    pytest.importorskip("triton")
    return run_under_interpreter(CHILD, CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_kernels_match_the_reference_under_interpreter(results, case):
    gated, grads = CASES[case][2] is not None, CASES[case][-1]
    r = results[case]
    assert r["launches"] == (["forward"] if grads == "none" else ["forward", "backward"])
    want = {"all": ["dgate", "dweight", "dx"] if gated else ["dweight", "dx"], "x": ["dx"], "weight": ["dweight"],
            "gate": ["dgate"], "none": []}[grads]  # fmt: skip
    assert sorted(t for t in r["tensors"] if t != "y") == want
    for tensor, t in r["tensors"].items():
        assert t["finite"] and t["shape_ok"] and t["dtype"] == t["want_dtype"], f"{tensor}: {t}"
        assert t["nonzero"], f"{tensor}: the reference is all zeros (the case tests nothing)"
        assert t["error"] < TOLERANCE[t["dtype"]], f"{tensor}: relative RMS error {t['error']:.2e} ({t['dtype']})"


def test_a_model_trains_alike_on_the_kernels_under_interpreter(results):
    r = results["model"]
    n = r["norms"] * r["steps"]
    assert sorted(r["launches"]) == ["backward"] * n + ["forward"] * n, "every norm ran on the kernels, both ways"
    torch.testing.assert_close(torch.tensor(r["losses"]), torch.tensor(r["want"]), rtol=1e-5, atol=0)
    assert r["parameter_error"] < 1e-4  # Adam steps of near-zero gradients magnify their rounding
