"""Every decay kind: validation from capability flags, outputs, initial medians, shared keys, carried state."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from decaylab.decay import DECAY_KINDS, DecayConfig, DecayDims, build_decay
from decaylab.decay.fixed import tnl_log_decay
from tests.conftest import assert_close

PUBLIC = {
    "mamba2", "mamba2_no_a", "mamba2_no_dt", "mamba2_no_a_no_dt", "gla", "hgrn2", "lightnet", "lssp", "tnl",
    "tnl_l", "simple", "retnet", "none",
}
GRID = list(itertools.product(DECAY_KINDS.names(), ["vector", "scalar"], [False, True], [None, True]))


def expected_valid(kind, granularity, share, lower_bound) -> bool:
    cls = DECAY_KINDS.get(kind)
    ok = cls.supports_vector if granularity == "vector" else cls.supports_scalar
    if share:
        ok = ok and cls.supports_share and granularity == "vector"
    if lower_bound:
        ok = ok and cls.supports_lower_bound
    return ok


def test_public_names_are_registered_with_labels():
    assert PUBLIC <= set(DECAY_KINDS.names())
    labels = [cls.label for _, cls in DECAY_KINDS.items()]
    assert all(labels) and len(set(labels)) == len(labels)


@pytest.mark.parametrize("kind,granularity,share,lower_bound", GRID, ids=lambda v: str(v))
def test_config_accepts_exactly_what_the_flags_allow(kind, granularity, share, lower_bound):
    kwargs = dict(kind=kind, granularity=granularity, share=share, lower_bound=lower_bound)
    if expected_valid(kind, granularity, share, lower_bound):
        cfg = DecayConfig(**kwargs)
        assert cfg.uses_lower_bound == bool(lower_bound or (lower_bound is None and kind == "hgrn2"))
    else:
        with pytest.raises(ValueError, match=r"decay\.(granularity|share|lower_bound)"):
            DecayConfig(**kwargs)


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="Did you mean 'mamba2'"):
        DecayConfig(kind="mamba")
    with pytest.raises(ValueError, match="decay.granularity='scalar'"):
        DecayConfig(kind="tnl")
    with pytest.raises(ValueError, match="decay.share=True needs decay.granularity='vector'"):
        DecayConfig(kind="gla", granularity="scalar", share=True)
    with pytest.raises(ValueError, match="decay.p=0.9 has no effect on decay.kind='gla'"):
        DecayConfig(kind="gla", p=0.9)
    with pytest.raises(ValueError, match="decay.gla_form='original' has no effect"):
        DecayConfig(kind="hgrn2", gla_form="original")
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        DecayConfig(kind="simple", p=1.0)


def valid_triples():
    return [(k, g, s) for k, g, s, lb in GRID if lb is None and expected_valid(k, g, s, lb)]


@pytest.mark.parametrize("kind,granularity,share", valid_triples(), ids=lambda v: str(v))
def test_outputs_shapes_signs_and_gradients(kind, granularity, share):
    torch.manual_seed(0)
    cfg = DecayConfig(kind=kind, granularity=granularity, share=share)
    dims = DecayDims(d_model=24, n_heads=3, channels=4, layer_idx=1, n_layers=3)
    module = build_decay(cfg, dims)
    x = torch.randn(2, 6, 24, requires_grad=True)
    lb = torch.rand(module.shape) * 0.5 + 0.25 if cfg.uses_lower_bound else None
    out = module(x, lower_bound=lb)
    shape = (2, 6, 3) if granularity == "scalar" else (2, 6, 3, 4)
    assert out.log_decay.shape == shape and out.log_decay.dtype == torch.float32
    assert torch.isfinite(out.log_decay).all() and (out.log_decay <= 0).all()
    assert (out.key is not None) == share
    if share:
        assert out.key.shape == shape and torch.isfinite(out.key).all()
    assert (out.state is not None) == module.stateful
    loss = out.log_decay.sum() + (out.key.sum() if share else 0)
    params = [p for p in module.parameters() if p.requires_grad]
    if module.data_dependent or params:
        loss.backward()
        grads = [g for g in [x.grad, *[p.grad for p in params]] if g is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


def medians(kind, granularity="vector", layer_idx=0, n_layers=12, seed=0, T=256, **kw):
    """Median initial decay of one 160M-shaped layer on unit-RMS inputs (weights as the model inits them)."""
    torch.manual_seed(seed)
    cfg = DecayConfig(kind=kind, granularity=granularity, **kw)
    module = build_decay(cfg, DecayDims(768, 12, 64, layer_idx, n_layers))
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.trunc_normal_(m.weight, 0.0, 0.02, -0.06, 0.06)
    with torch.no_grad():
        return module(torch.randn(1, T, 768)).log_decay.exp()


@pytest.mark.parametrize(
    "kind,granularity,kw,low,high",
    [
        ("mamba2", "vector", {}, 0.88, 0.97),
        ("mamba2_no_a", "vector", {}, 0.98, 0.995),
        ("mamba2_no_dt", "vector", {}, 0.0012, 0.005),
        ("mamba2_no_dt", "scalar", {}, 0.003, 0.02),
        ("mamba2_no_a_no_dt", "vector", {}, 0.47, 0.53),
        ("gla", "vector", {}, 0.49, 0.51),
        ("gla", "vector", {"gla_form": "original"}, 0.955, 0.96),
        ("hgrn2", "vector", {"lower_bound": False}, 0.48, 0.52),
        ("simple", "vector", {"p": 0.99}, 0.9895, 0.9905),
        ("simple", "vector", {"p": 0.8}, 0.79, 0.81),
        ("simple", "scalar", {"p": 0.9}, 0.88, 0.92),
    ],
    ids=lambda v: str(v),
)
def test_initial_median_decay_matches_the_design_table(kind, granularity, kw, low, high):
    med = medians(kind, granularity, **kw).median().item()
    assert low <= med <= high, f"{kind} {granularity} {kw}: median {med}"


def test_tnl_slopes_and_learnable_copy():
    layer0 = [0.607, 0.725, 0.813, 0.875, 0.918, 0.946, 0.965, 0.978, 0.985, 0.991, 0.994, 0.996]
    got = medians("tnl", "scalar", layer_idx=0, T=4)[0, 0]
    assert torch.allclose(got, torch.tensor(layer0), atol=1e-3)
    assert (medians("tnl", "scalar", layer_idx=11, T=4) > 0.9999).all()
    learnable = medians("tnl_l", "scalar", layer_idx=3, T=4)
    assert torch.allclose(learnable, medians("tnl", "scalar", layer_idx=3, T=4))
    assert torch.allclose(learnable[0, 0].log().double(), tnl_log_decay(12, 3, 12), atol=1e-6)


def test_retnet_and_none_are_fixed():
    h = torch.arange(12, dtype=torch.float64)
    assert torch.allclose(medians("retnet", "scalar", T=3)[0, 0].double(), 1 - 2.0 ** (-5 - h), atol=1e-7)
    assert (medians("none", "scalar", T=3) == 1).all()


def test_lightnet_initial_decay_is_t_over_t_plus_1():
    lam = medians("lightnet", T=512)[0].mean(dim=(1, 2))  # [T]
    t = torch.arange(1, 513, dtype=torch.float32)
    assert torch.allclose(lam, t / (t + 1), rtol=0.02)


@pytest.mark.parametrize("kind", ["lightnet", "lssp"])
@pytest.mark.parametrize("granularity,share", [("vector", False), ("vector", True), ("scalar", False)])
def test_carried_state_continues_exactly(kind, granularity, share):
    torch.manual_seed(1)
    cfg = DecayConfig(kind=kind, granularity=granularity, share=share)
    module = build_decay(cfg, DecayDims(16, 2, 8, 0, 1)).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64) * 3  # large pre-activations stress the normalizer
    full = module(x)
    pieces, state = [], None
    for lo, hi in [(0, 4), (4, 5), (5, 9)]:
        out = module(x[:, lo:hi], state=state)
        pieces.append(out)
        state = out.state
    assert_close("log_decay", full.log_decay, torch.cat([p.log_decay for p in pieces], 1), 1e-12)
    assert_close("state", full.state, state, 1e-12)
    if share:
        assert_close("key", full.key, torch.cat([p.key for p in pieces], 1), 1e-12)


@pytest.mark.parametrize("kind", ["gla", "hgrn2", "simple", "lightnet", "lssp"])
def test_shared_key_is_one_minus_decay(kind):
    torch.manual_seed(2)
    module = build_decay(DecayConfig(kind=kind, share=True), DecayDims(16, 2, 8, 2, 4)).double()
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    lb = torch.rand(module.shape, dtype=torch.float64) * 0.9 + 0.05 if module.supports_lower_bound else None
    out = module(x, lower_bound=lb)
    assert_close("key", 1 - out.log_decay.exp(), out.key, 1e-12)


@pytest.mark.parametrize("kind", ["mamba2", "mamba2_no_a", "mamba2_no_dt", "mamba2_no_a_no_dt"])
def test_shared_mamba_key_is_the_step_size(kind):
    torch.manual_seed(3)
    module = build_decay(DecayConfig(kind=kind, share=True), DecayDims(16, 2, 8, 0, 1)).double()
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    out = module(x)
    z = module.key_proj(x).view(1, 5, 2, 8)
    dt = torch.nn.functional.softplus(z if module.dt_bias is None else z + module.dt_bias)
    A = 1.0 if module.log_A is None else module.log_A.exp()
    assert_close("key", dt, out.key, 1e-12)
    assert_close("log_decay", -A * dt, out.log_decay, 1e-12)


@pytest.mark.parametrize("kind", ["gla", "hgrn2", "simple"])
def test_lower_bound_formula(kind):
    torch.manual_seed(4)
    module = build_decay(DecayConfig(kind=kind, lower_bound=True), DecayDims(16, 2, 8, 1, 2)).double()
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    lb = torch.rand(module.shape, dtype=torch.float64) * 0.9 + 0.05
    raw = module(x).log_decay.exp()
    assert_close("decay", lb + (1 - lb) * raw, module(x, lower_bound=lb).log_decay.exp(), 1e-12)
    assert math.isclose(DecayConfig(kind="hgrn2").uses_lower_bound, True)


def test_projection_shapes_follow_granularity_share_and_rank():
    dims = DecayDims(d_model=24, n_heads=3, channels=4, layer_idx=0, n_layers=1)
    vector = build_decay(DecayConfig(kind="gla", rank=5), dims)
    assert [tuple(m.weight.shape) for m in vector.proj] == [(5, 24), (12, 5)] and vector.key_proj is None
    scalar = build_decay(DecayConfig(kind="gla", granularity="scalar"), dims)
    assert tuple(scalar.proj.weight.shape) == (3, 24)
    shared = build_decay(DecayConfig(kind="gla", share=True), dims)
    assert shared.proj is None and tuple(shared.key_proj.weight.shape) == (12, 24)
    assert not list(build_decay(DecayConfig(kind="tnl", granularity="scalar"), dims).parameters())
