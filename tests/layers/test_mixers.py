"""Token mixers against naive quadratic references; relative encodings stay relative with vector decay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decaylab.layers import DecayLinearAttention, GatedRMSNorm, RMSNorm, SoftmaxAttention, SwiGLU
from decaylab.model import ModelConfig
from tests.conftest import assert_close


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.from_preset("tiny", overrides)


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module


def test_linear_attention_matches_quadratic_formula():
    layer = perturbed(DecayLinearAttention(tiny(**{"decay.kind": "gla"}), layer_idx=0))
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    out = layer(x)
    B, T, H, K = 2, 7, 2, 16
    q = F.silu(layer.q_proj(x)).view(B, T, H, K)
    k = F.silu(layer.k_proj(x)).view(B, T, H, K)
    v = layer.v_proj(x).view(B, T, H, K)
    cum = out.log_decay.cumsum(1)  # [B, T, H, K]
    o = torch.zeros(B, T, H, K, dtype=torch.float64)
    for t in range(T):
        for s in range(t + 1):
            w = (q[:, t] * k[:, s] * (cum[:, t] - cum[:, s]).exp()).sum(-1)  # [B, H]
            o[:, t] += w[..., None] * v[:, s]
    gate = layer.gate(x)
    ref = layer.o_proj(layer.norm(o.reshape(B, T, 32), gate))
    assert_close("linear attention", ref, out.y, 1e-12)


@pytest.mark.parametrize("pos", ["rope", "lrpe"])
@pytest.mark.parametrize("granularity,share", [("vector", False), ("vector", True), ("scalar", False)])
def test_relative_encodings_are_shift_invariant(pos, granularity, share):
    cfg = tiny(pos=pos, **{"decay.kind": "mamba2", "decay.granularity": granularity, "decay.share": share})
    layer = perturbed(DecayLinearAttention(cfg, layer_idx=0))
    x = torch.randn(1, 6, 32, dtype=torch.float64)
    assert_close("shifted", layer(x, offset=0).y, layer(x, offset=37).y, 1e-10)


def test_softmax_attention_matches_reference_and_cache():
    layer = perturbed(SoftmaxAttention(tiny(mixer="softmax", pos="rope"), layer_idx=0))
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    full = layer(x).y
    q, k = layer.pe(layer.q_proj(x).view(2, 6, 2, 16), layer.k_proj(x).view(2, 6, 2, 16), 0)
    v = layer.v_proj(x).view(2, 6, 2, 16)
    scores = torch.einsum("bthk,bshk->bhts", q, k) / 4.0
    scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhts,bshk->bthk", scores.softmax(-1), v).reshape(2, 6, 32)
    assert_close("softmax", layer.o_proj(o), full, 1e-12)
    first = layer(x[:, :4], use_cache=True)
    second = layer(x[:, 4:], cache=first.cache, offset=4, use_cache=True)
    assert_close("cached", full, torch.cat([first.y, second.y], 1), 1e-12)
    assert second.cache.k.shape == (2, 2, 6, 16)


def test_norms_and_swiglu_formulas():
    torch.manual_seed(3)
    x, g = torch.randn(3, 10, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64)
    norm = RMSNorm(10).double()
    with torch.no_grad():
        norm.weight.normal_()
    assert_close("rmsnorm", x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * norm.weight, norm(x), 1e-12)
    gated = GatedRMSNorm(10).double()
    assert_close("gated", norm.__class__.forward(gated, x * torch.sigmoid(g)), gated(x, g), 1e-12)
    ffn = SwiGLU(10, 12).double()
    assert_close("swiglu", ffn.w3(F.silu(ffn.w1(x)) * ffn.w2(x)), ffn(x), 1e-12)



@pytest.mark.parametrize("kind", ["gla", "mamba2", "lightnet"])
def test_layers_skip_the_synchronizing_decay_value_check(kind, monkeypatch):
    """Decay kinds return log_decay <= 0 by contract (tests/decay), so the layers do not ask the op to verify it:
    on a GPU that check reads a value back and waits for the queue, in every layer of every step."""
    import decaylab.ops as ops

    seen = []
    real = ops._check_inputs
    monkeypatch.setattr(ops, "_check_inputs", lambda *a, **kw: seen.append(a[-1]) or real(*a, **kw))
    layer = DecayLinearAttention(tiny(**{"decay.kind": kind}), layer_idx=0)
    layer(torch.randn(2, 7, 32))
    assert seen == [False]
