"""Projections that share an input, stacked into one matmul: the same outputs and gradients as one by one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decaylab.layers.projections import fuse, project
from decaylab.model import DecayLM, ModelConfig


def test_stacked_projections_equal_the_layers_one_by_one():
    torch.manual_seed(0)
    linears = [nn.Linear(24, n, bias=False).double() for n in (24, 24, 7)]
    x = torch.randn(3, 5, 24, dtype=torch.float64, requires_grad=True)
    with fuse(False):
        plain = project(x, *linears)
    with fuse(True):
        stacked = project(x, *linears)
    assert [t.shape for t in stacked] == [(3, 5, 24), (3, 5, 24), (3, 5, 7)]
    for a, b in zip(plain, stacked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    weights = [torch.randn_like(t) for t in plain]
    grads_plain = torch.autograd.grad(sum((t * w).sum() for t, w in zip(plain, weights)), [x, *(l.weight for l in linears)])
    grads_stacked = torch.autograd.grad(sum((t * w).sum() for t, w in zip(stacked, weights)),
                                        [x, *(l.weight for l in linears)])
    for a, b in zip(grads_plain, grads_stacked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_on_a_cpu_the_layers_run_one_by_one_and_biases_are_never_stacked():
    x = torch.randn(2, 8)
    a, b = nn.Linear(8, 4, bias=False), nn.Linear(8, 4, bias=False)
    assert all(torch.equal(p, q) for p, q in zip(project(x, a, b), (a(x), b(x))))  # the default on a CPU
    with fuse(True):
        biased = nn.Linear(8, 4)
        assert all(torch.equal(p, q) for p, q in zip(project(x, a, biased), (a(x), biased(x))))


MODELS = {
    "linear": {"decay": {"kind": "gla"}},
    "linear, shared key": {"decay": {"kind": "simple", "share": True}},
    "softmax with rope": {"mixer": "softmax", "pos": "rope"},
}


@pytest.mark.parametrize("changes", MODELS.values(), ids=MODELS.keys())
def test_a_model_with_stacked_projections_matches_the_plain_one(changes):
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": 97, "dropout": 0.0, **changes})).double()
    x, y = torch.randint(0, 97, (2, 33)), torch.randint(0, 97, (2, 33))
    results = []
    for stacked in (False, True):
        model.zero_grad(set_to_none=True)
        with fuse(stacked):
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("changes", MODELS.values(), ids=MODELS.keys())
def test_on_a_gpu_the_stacked_projections_train_like_the_plain_ones(changes):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", {"vocab_size": 97, "dropout": 0.0, **changes})).cuda()
    x, y = torch.randint(0, 97, (4, 64), device="cuda"), torch.randint(0, 97, (4, 64), device="cuda")
    results = []
    for stacked in (False, None):  # None: the default on CUDA, stacked
        model.zero_grad(set_to_none=True)
        with fuse(stacked), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=2e-3, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        assert (a - b).norm() <= 2e-2 * a.norm() + 1e-6
