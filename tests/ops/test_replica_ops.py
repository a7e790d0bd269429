"""Ops under vmap over replicas (decaylab.ops.replicas): each replica's outputs and gradients are those of the op
called on that replica alone, for the attention backends, the positional kernels and the norm kernels (a weight per
replica or one shared), on random inputs at awkward shapes; the Triton kernels under the interpreter."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

from decaylab.ops import decay_linear_attention
from decaylab.ops.replicas import fold_rows, under_vmap
from tests.ops.helpers import make_inputs, run_under_interpreter

R = 3


def _grads(outputs, leaves, seed=5):
    g = torch.Generator().manual_seed(seed)
    total = sum((o.double() * torch.randn(tuple(o.shape), generator=g, dtype=torch.float64)).sum()
                for o in outputs if o is not None)
    return torch.autograd.grad(total, leaves)


def _replica_inputs(B, T, H, K, V, vector, initial_state):
    per = [make_inputs(B, T, H, K, V, vector=vector, initial_state=initial_state, seed=s) for s in range(R)]
    return [torch.stack(parts) if parts[0] is not None else None for parts in zip(*per)]


@pytest.mark.parametrize("backend", ["chunk", "recurrent"])
@pytest.mark.parametrize("vector", [False, True])
@pytest.mark.parametrize("initial_state", [False, True])
def test_attention_under_vmap_matches_each_replica_alone(backend, vector, initial_state):
    q, k, v, ld, h0 = _replica_inputs(2, 37, 2, 8, 12, vector, initial_state)  # T not a multiple of the chunk, K != V
    leaves = [t.requires_grad_() for t in (q, k, v, ld, h0) if t is not None]

    def one(q, k, v, ld, h0):
        return decay_linear_attention(q, k, v, ld, initial_state=h0, output_final_state=True, scale=0.7,
                                      backend=backend)

    o, final = vmap(one, in_dims=(0, 0, 0, 0, 0 if initial_state else None))(q, k, v, ld, h0)
    got = (o, final, *_grads([o, final], leaves))
    outs = [one(*(None if t is None else t[r] for t in (q, k, v, ld, h0))) for r in range(R)]
    o_ref, final_ref = torch.stack([a for a, _ in outs]), torch.stack([b for _, b in outs])
    want = (o_ref, final_ref, *_grads([o_ref, final_ref], leaves))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_an_unbatched_initial_state_is_shared_by_every_replica():
    q, k, v, ld, _ = _replica_inputs(2, 20, 2, 8, 8, True, False)
    h0 = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)

    def one(q, k, v, ld):
        return decay_linear_attention(q, k, v, ld, initial_state=h0, output_final_state=True, backend="chunk")

    o, final = vmap(one)(q, k, v, ld)
    (dh0,) = _grads([o, final], [h0])
    outs = [one(q[r], k[r], v[r], ld[r]) for r in range(R)]
    want = torch.stack([a for a, _ in outs]), torch.stack([b for _, b in outs])
    torch.testing.assert_close((o, final), want)
    torch.testing.assert_close(dh0, _grads(list(want), [h0])[0])


def test_fold_rows_outside_vmap_is_the_plain_call():
    x = torch.randn(4, 3)
    assert not under_vmap(x)
    assert fold_rows(lambda a, b: a * b, (x, 2.0), (True, False)).equal(x * 2)


def test_fold_rows_refuses_a_batched_argument_that_is_not_rowwise():
    x, table = torch.randn(R, 4, 3), torch.randn(R, 3)
    with pytest.raises(ValueError, match="differs between replicas"):
        vmap(lambda a, t: fold_rows(lambda a, t: a * t, (a, t), (True, False)))(x, table)


def test_packed_sequences_under_vmap_are_refused():
    q, k, v, ld, _ = _replica_inputs(1, 16, 1, 4, 4, False, False)
    cu = torch.tensor([0, 7, 16])
    with pytest.raises(ValueError, match="cu_seqlens under vmap"):
        vmap(lambda q, k, v, ld: decay_linear_attention(q, k, v, ld, cu_seqlens=cu)[0])(q, k, v, ld)


_KERNELS_SCRIPT = r"""
import json, sys
import torch
from torch.func import vmap
from decaylab.ops import norm, positional

R = 3
cases = json.loads(sys.argv[1])
calls = []  # the kernels' entry points, counted: each vmapped call must be one call of them, not the torch code


def counted(module, name):
    fn = getattr(module, name)
    setattr(module, name, lambda *a, **kw: (calls.append(name), fn(*a, **kw))[1])


counted(norm._triton, "rms_norm")
counted(positional._triton, "rope")
counted(positional._triton, "lrpe")
g = torch.Generator().manual_seed(0)


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def grads(outs, leaves):
    gg = torch.Generator().manual_seed(7)
    total = sum((o.double() * torch.randn(tuple(o.shape), generator=gg, dtype=torch.float64)).sum() for o in outs)
    return torch.autograd.grad(total, leaves)


for name, (kind, shared, gated) in cases.items():
    if kind == "norm":
        x = torch.randn(R, 2, 5, 24, generator=g, requires_grad=True)  # 10 rows a replica: not a multiple of a tile
        gate = torch.randn(R, 2, 5, 24, generator=g, requires_grad=True) if gated else None
        w = (1 + 0.5 * torch.randn(24 if shared else (R, 24), generator=g)).requires_grad_()
        leaves = [t for t in (x, w, gate) if t is not None]
        with norm.use_kernels(True):
            y = vmap(lambda x, w, gate: norm.rms_norm(x, w, 1e-5, gate),
                     in_dims=(0, None if shared else 0, None if gate is None else 0))(x, w, gate)
        got = [y, *grads([y], leaves)]
        with norm.use_kernels(False):
            ys = [norm.rms_norm(x[r].double(), (w if shared else w[r]).double(), 1e-5,
                                None if gate is None else gate[r].double()) for r in range(R)]
        want_y = torch.stack(ys)
        want = [want_y, *grads([want_y], leaves)]
        assert calls == ["rms_norm"], calls
    else:
        q = torch.randn(R, 2, 9, 2, 8, generator=g, requires_grad=True)
        k = torch.randn(R, 2, 9, 2, 8, generator=g, requires_grad=True)
        if kind == "rope":  # the rotate-half layout: each angle twice
            angle = torch.arange(9.0)[:, None, None] * torch.linspace(0.1, 1.0, 4)
            cos, sin = angle.cos().repeat(1, 1, 2), torch.cat([-angle.sin(), angle.sin()], -1)
        else:
            angle = torch.arange(9.0)[:, None, None] * torch.linspace(0.1, 1.0, 8)
            cos, sin = angle.cos(), angle.sin()
        op = getattr(positional, kind)
        with positional.use_kernels(True):
            a, b = vmap(lambda q, k: op(q, k, cos, sin))(q, k)
        assert calls == [kind], calls
        got = [a, b, *grads([a, b], [q, k])]
        with positional.use_kernels(False):
            pairs = [op(q[r].double(), k[r].double(), cos.double(), sin.double()) for r in range(R)]
        wa, wb = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        want = [wa, wb, *grads([wa, wb], [q, k])]
    calls.clear()
    print(json.dumps({name: [rel(a, b) for a, b in zip(got, want)]}))
"""

_KERNEL_CASES = {
    "norm, a weight per replica": ("norm", False, False),
    "gated norm, a weight per replica": ("norm", False, True),
    "norm, one weight shared": ("norm", True, False),
    "rope": ("rope", None, None),
    "lrpe": ("lrpe", None, None),
}


@pytest.fixture(scope="module")
def kernel_errors():
    return run_under_interpreter(_KERNELS_SCRIPT, _KERNEL_CASES)


@pytest.mark.parametrize("case", list(_KERNEL_CASES))
def test_triton_kernels_under_vmap_match_each_replica_alone(kernel_errors, case):
    errors = kernel_errors[case]
    assert len(errors) >= 3  # outputs and every gradient compared
    assert max(errors) < 1e-5, errors  # float32 kernels against the float64 torch code


_MODEL_SCRIPT = r"""
import json, sys
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from decaylab.config import with_overrides
from decaylab.model import DecayLM
from decaylab.ops import norm, positional
from decaylab.run.config import run_preset

R = 3
for name, design in json.loads(sys.argv[1]).items():
    cfg = with_overrides(run_preset("ptb-small"), {"model.vocab_size": 50, "model.d_model": 64, "model.n_layers": 1,
                                                   "model.n_heads": 2, "model.dropout": 0.0, **design})
    models = []
    for seed in range(R):
        torch.manual_seed(seed)
        models.append(DecayLM(cfg.model))
    for m in models:
        for module in m.modules():
            if hasattr(module, "backend"):
                module.backend = "triton"  # the GPU's attention kernels, here under the interpreter
    stacked = {n: torch.stack([m.get_parameter(n).detach() for m in models]).requires_grad_()
               for n, _ in models[0].named_parameters()}
    x = torch.randint(0, 50, (R, 2, 21), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 50, (R, 2, 21), generator=torch.Generator().manual_seed(2))
    errors = {}
    with norm.use_kernels(True), positional.use_kernels(True):
        logits = vmap(lambda p, xx: functional_call(models[0], p, (xx,)))(stacked, x)
        sum(F.cross_entropy(logits[r].flatten(0, 1), y[r].flatten()) for r in range(R)).backward()
        for r in range(R):
            alone = models[r](x[r])
            F.cross_entropy(alone.flatten(0, 1), y[r].flatten()).backward()
            errors[f"logits {r}"] = float((logits[r] - alone).abs().max() / alone.abs().max())
            for n, p in models[r].named_parameters():
                if p.grad is not None and p.grad.abs().max() > 0:
                    errors[f"{n} {r}"] = float((stacked[n].grad[r] - p.grad).abs().max() / p.grad.abs().max())
    print(json.dumps({name: errors}))
"""

_MODEL_CASES = {
    "simple scalar": {"model.decay.kind": "simple", "model.decay.granularity": "scalar"},
    "gla vector rope": {"model.decay.kind": "gla", "model.decay.granularity": "vector", "model.pos": "rope"},
}


def test_a_replicated_model_on_the_triton_kernels_matches_each_model_alone():
    """The whole model under vmap with the attention, norm and positional kernels (interpreter), float32: every
    replica's logits and every parameter's gradient are those of its model called alone."""
    found = run_under_interpreter(_MODEL_SCRIPT, _MODEL_CASES)
    for case in _MODEL_CASES:
        errors = found[case]
        assert len(errors) > 20, case  # logits and the gradients of the parameters compared
        worst = max(errors, key=errors.get)
        assert errors[worst] < 1e-4, (case, worst, errors[worst])
