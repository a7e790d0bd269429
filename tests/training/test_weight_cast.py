"""The matmul weights cast once per step give the bits autocast gives, for every kind of layer that has them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decaylab.model import DecayLM, ModelConfig
from decaylab.training.weight_cast import call_with_cast_weights, cast_once, castable_linear_weights

MODELS = {
    "simple scalar": {"decay": {"kind": "simple", "granularity": "scalar"}},
    "gla vector shared key": {"decay": {"kind": "gla", "share": True}},
    "mamba2 with rope": {"decay": {"kind": "mamba2"}, "pos": "rope"},
    "hgrn2 with lrpe": {"decay": {"kind": "hgrn2"}, "pos": "lrpe"},
    "tnl with tpe": {"decay": {"kind": "tnl", "granularity": "scalar"}, "pos": "tpe"},
    "softmax": {"mixer": "softmax", "pos": "rope"},
    "tied embeddings": {"decay": {"kind": "gla"}, "tie_embeddings": True},
}


def _loss_and_grads(model, weights, dtype, x, y):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = call_with_cast_weights(model, weights, dtype, x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("changes", MODELS.values(), ids=MODELS.keys())
def test_cast_once_trains_to_the_bits_of_autocast(changes):
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": 97, "dropout": 0.0, **changes}))
    weights = castable_linear_weights(model)
    assert weights and all(p.dtype == torch.float32 for p in weights.values())
    x, y = torch.randint(0, 97, (2, 40)), torch.randint(0, 97, (2, 40))
    plain_loss, plain = _loss_and_grads(model, weights, None, x, y)
    cast_loss, cast = _loss_and_grads(model, weights, torch.bfloat16, x, y)
    assert torch.equal(plain_loss, cast_loss)
    assert plain.keys() == cast.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        assert cast[name].dtype == torch.float32, name
        assert torch.equal(plain[name], cast[name]), name


def test_only_weights_that_only_linears_use_are_cast():
    model = DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": 97, "tie_embeddings": True}))
    names = castable_linear_weights(model)
    assert "embed.weight" not in names and not any(n.endswith("norm.weight") for n in names)
    untied = DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": 97}))
    assert len(castable_linear_weights(untied)) == len(names) + 1  # the untied output head joins
    frozen = nn.Linear(3, 4)
    frozen.weight.requires_grad_(False)
    assert list(castable_linear_weights(nn.Sequential(frozen, nn.Linear(4, 2)))) == ["1.weight"]


def test_an_unused_weight_gets_a_zero_gradient_and_mixed_dtypes_are_refused():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    cast = cast_once({"a": a, "b": b}, torch.bfloat16)
    assert cast["a"].dtype == torch.bfloat16 and torch.equal(cast["b"], b.detach().to(torch.bfloat16))
    (cast["a"].float() * 2).sum().backward()
    assert torch.equal(a.grad, torch.full((3, 4), 2.0)) and torch.equal(b.grad, torch.zeros(5))
    with pytest.raises(ValueError, match="one dtype"):
        cast_once({"a": a, "h": torch.randn(2, dtype=torch.float64)}, torch.bfloat16)
    assert cast_once({}, torch.bfloat16) == {}


@pytest.mark.gpu
def test_a_graphed_step_with_weights_cast_once_replays_the_same_bits():
    from decaylab.run.config import TrainConfig
    from decaylab.training.cuda_graph import GraphedTrainStep
    from decaylab.training.optim import build_optimizer

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    curves = []
    x = torch.randint(0, 97, (4, 64))
    y = torch.randint(0, 97, (4, 64))
    for cast in (False, True):
        torch.manual_seed(0)
        model = DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": 97, "dropout": 0.0})).cuda()
        optimizer = build_optimizer(model, TrainConfig(lr=3e-3), capturable=True)
        step = GraphedTrainStep(model, model, optimizer, rows=4, seq_len=64, grad_accum=1, max_norm=1.0,
                                autocast_dtype=torch.bfloat16)
        assert step.cast_weights
        if not cast:
            step.cast_weights = {}
        curves.append([float(step(x, y, 3e-3)[0]) for _ in range(5)])
    assert curves[0] == curves[1]
