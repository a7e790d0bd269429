"""Backend choice for decoding, contiguous outputs, and half-precision inputs with and without autocast."""

from __future__ import annotations

import pytest
import torch

from decaylab.ops import BACKENDS, auto_backend, decay_linear_attention
from tests.conftest import TOLERANCE, assert_close
from tests.ops.helpers import make_inputs, run

TORCH_BACKENDS = ["recurrent", "parallel", "chunk"]


def test_auto_decodes_one_token_with_the_recurrence_on_cpu():
    cpu = torch.device("cpu")
    assert auto_backend(cpu, 1) == "recurrent"
    assert auto_backend(cpu, 2) == "chunk" and auto_backend(cpu, 0) == "chunk" and auto_backend(cpu) == "chunk"


def test_one_token_call_runs_the_recurrent_backend(monkeypatch):
    used = []
    for name in ("recurrent", "chunk"):
        original = BACKENDS.get(name)
        monkeypatch.setitem(BACKENDS._items, name, lambda *a, _f=original, _n=name, **kw: used.append(_n) or _f(*a, **kw))
    q, k, v, ld, h0 = make_inputs(2, 1, 2, 4, 3, vector=True, initial_state=True)
    decay_linear_attention(q, k, v, ld, initial_state=h0, output_final_state=True)
    decay_linear_attention(*make_inputs(2, 5, 2, 4, 3, vector=True)[:4])
    assert used == ["recurrent", "chunk"]


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_outputs_and_gradients_are_contiguous(backend, dtype):
    B, T, H, K, V = 2, 37, 3, 4, 5
    out = run(backend, *make_inputs(B, T, H, K, V, vector=True, dtype=dtype, initial_state=True))
    out["o"].view(B, T, H * V)  # a view needs a contiguous layout
    for name, t in out.items():
        assert t.is_contiguous(), name


def _half_inputs(dtype, vector, seed=0):
    """q, k, v in ``dtype``; log decay and initial state in float32, as in mixed-precision training."""
    q, k, v, ld, h0 = make_inputs(2, 90, 2, 8, 6, vector=vector, dtype=dtype, initial_state=True, seed=seed)
    return q, k, v, ld.float(), h0.float()


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("decay", ["scalar", "vector"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_inputs_with_float32_decay_and_state(backend, decay, dtype):
    inputs = _half_inputs(dtype, decay == "vector")
    plain = run(backend, *inputs, scale=0.5)

    def forward_under_autocast(*args, **kwargs):  # backward outside autocast, as PyTorch recommends
        with torch.autocast("cpu", dtype=dtype):
            return decay_linear_attention(*args, **kwargs, backend=backend)

    autocast = run(forward_under_autocast, *inputs, scale=0.5)
    ref = run("recurrent", *(x.double() for x in inputs), scale=0.5)
    expected = {"o": dtype, "final_state": torch.float32, "dq": dtype, "dk": dtype, "dv": dtype,
                "dlog_decay": torch.float32, "dinitial_state": torch.float32}
    scale = ref["dq"].abs().max().item()
    for name, dtype_of in expected.items():
        assert plain[name].dtype == dtype_of, name
        # Autocast is off inside every backend: the same float32 arithmetic, bit for bit.
        assert torch.equal(plain[name], autocast[name]), f"{name} changed under autocast"
        assert_close(name, ref[name], plain[name], TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)


@pytest.mark.parametrize("decay", ["scalar", "vector"])
def test_chunk_backward_inside_autocast_is_unchanged(decay):
    # The chunked backward is hand-written and turns autocast off itself, even when .backward() runs inside it.
    inputs = _half_inputs(torch.bfloat16, decay == "vector")
    plain = run("chunk", *inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = run("chunk", *inputs)
    for name in plain:
        assert torch.equal(plain[name], inside[name]), name


@pytest.mark.parametrize("backend", TORCH_BACKENDS)
@pytest.mark.parametrize("decay", ["scalar", "vector"])
def test_inputs_made_under_bf16_autocast_train(backend, decay):
    # As in a layer: q, k, v from linear maps under autocast (bf16), the log decay from a float32 map.
    torch.manual_seed(0)
    B, T, H, D = 2, 70, 2, 8
    x = torch.randn(B, T, H * D)
    proj = torch.nn.Linear(H * D, 3 * H * D)
    gate = torch.nn.Linear(H * D, H * (D if decay == "vector" else 1))
    state = torch.randn(B, H, D, D, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = proj(x).view(B, T, 3, H, D).unbind(2)
        log_decay = torch.nn.functional.logsigmoid(gate(x).float() + 2).view(B, T, H, *([D] if decay == "vector" else []))
        assert q.dtype == torch.bfloat16 and log_decay.dtype == torch.float32
        o, final = decay_linear_attention(q, k, v, log_decay, initial_state=state, output_final_state=True,
                                          backend=backend)
        loss = o.float().square().mean() + final.square().mean()
    loss.backward()
    assert o.dtype == torch.bfloat16 and final.dtype == torch.float32
    for name, p in (("proj", proj.weight), ("gate", gate.weight), ("state", state)):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    o_ref, final_ref = decay_linear_attention(*(t.detach().double() for t in (q, k, v, log_decay)),
                                              initial_state=state.detach().double(), output_final_state=True,
                                              backend="recurrent")
    assert_close("o", o_ref, o, TOLERANCE[torch.bfloat16])
    assert_close("final_state", final_ref, final, TOLERANCE[torch.bfloat16])
