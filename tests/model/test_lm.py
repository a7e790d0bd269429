"""DecayLM: public API, generation, lower bounds, init, optimizer groups, dropout."""

from __future__ import annotations

import pytest
import torch

from decaylab import DECAY_KINDS, DecayLM, ModelConfig
from decaylab.decay.fixed import tnl_log_decay
from decaylab.model.generation import sample_next


def tiny_model(**ov) -> DecayLM:
    torch.manual_seed(0)
    return DecayLM(ModelConfig.from_preset("tiny", ov))


def test_public_api_example():
    cfg = ModelConfig.from_preset(
        "tiny",
        {"decay.kind": "simple", "decay.granularity": "vector", "decay.share": False, "decay.p": 0.9,
         "pos": "none", "mixer": "linear"},
    )
    model = DecayLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 8))
    logits = model(ids)
    assert logits.shape == (2, 8, cfg.vocab_size)
    logits2, log_decays = model(ids, return_decays=True)
    assert torch.equal(logits, logits2)
    assert [ld.shape for ld in log_decays] == [(2, 8, 2, 16)] * cfg.n_layers
    assert all(ld.dtype == torch.float32 for ld in log_decays)
    assert abs(log_decays[0].exp().median().item() - 0.9) < 1e-3
    out = model.generate(ids, max_new_tokens=16, temperature=0)
    assert out.shape == (2, 24) and torch.equal(out[:, :8], ids)
    assert "simple" in DECAY_KINDS


@pytest.mark.parametrize("ov", [{"decay.kind": "lightnet", "pos": "lrpe"}, {"mixer": "softmax", "pos": "rope"},
                                {"decay.kind": "tnl", "decay.granularity": "scalar", "pos": "tpe"}])
def test_greedy_generation_equals_argmax_of_full_forward(ov):
    model = tiny_model(**ov).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    prompt = torch.randint(0, 256, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    ids = prompt
    with torch.no_grad():
        for _ in range(6):  # no cache: the whole sequence every step
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)
    assert torch.equal(model.generate(prompt, 6, temperature=0, prefill_chunk_size=2), ids)
    assert torch.equal(model.generate(prompt, 6, temperature=1.0, top_k=1), ids)


def test_sampling_filters_and_reproducibility():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next(logits, 1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}
    draws = torch.stack([sample_next(logits, 1.0, top_p=0.7, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    draws = torch.stack([sample_next(logits, 1.0, top_p=0.4, generator=g) for _ in range(50)])
    assert set(draws.flatten().tolist()) == {0}
    model = tiny_model()
    prompt = torch.randint(0, 256, (1, 3))
    a = model.generate(prompt, 8, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.max() < 256 and model.training


@pytest.mark.parametrize(
    "kwargs,match",
    [({"max_new_tokens": -1}, "max_new_tokens"), ({"max_new_tokens": 2, "temperature": -1}, "temperature"),
     ({"max_new_tokens": 2, "top_k": 0}, "top_k"), ({"max_new_tokens": 2, "top_p": 1.5}, "top_p")],
)
def test_generation_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model().generate(torch.zeros(1, 2, dtype=torch.long), **kwargs)


def test_bad_inputs_are_explained():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[batch, tokens\] integer tensor"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cache must be the Cache"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=[1])


def test_hgrn2_lower_bounds_rise_with_depth():
    model = DecayLM(ModelConfig.from_preset("tiny", {"decay.kind": "hgrn2", "n_layers": 12}))
    lbs = model.lower_bounds()
    assert lbs[0] is None
    for i in range(1, 12):
        assert torch.allclose(lbs[i], torch.full_like(lbs[i], i / 12), atol=1e-6)
    ids = torch.randint(0, 256, (2, 64))
    logits, log_decays = model(ids, return_decays=True)
    medians = [ld.exp().median().item() for ld in log_decays]
    assert abs(medians[0] - 0.5) < 0.02 and abs(medians[6] - 0.75) < 0.01 and abs(medians[11] - 0.958) < 0.003
    logits.mean().backward()
    assert torch.isfinite(model.lower_bound_logits.grad).all() and model.lower_bound_logits.grad.abs().sum() > 0
    assert tiny_model(**{"decay.kind": "hgrn2", "decay.lower_bound": False}).lower_bound_logits is None


def test_init_follows_the_paper_intent():
    model = tiny_model(**{"decay.kind": "tnl_l", "decay.granularity": "scalar", "pos": "tpe"})
    for block in model.blocks:
        assert (block.ffn.w3.weight == 0).all()
        assert (block.mixer.norm.weight == 1).all() and (block.mixer_norm.weight == 1).all()
        assert block.mixer.q_proj.weight.abs().max() <= 0.06 + 1e-7
        lam = block.mixer.decay.log_decay.double()
        assert torch.allclose(lam, tnl_log_decay(2, block.mixer.layer_idx, 2), atol=1e-7)
    assert (model.input_pe.query == 1).all() and (model.input_pe.decay_logit == 0).all()
    std = torch.cat([b.mixer.q_proj.weight.flatten() for b in model.blocks]).std().item()
    assert 0.015 < std < 0.022


def test_param_groups_leave_decay_params_norms_and_embeddings_undecayed():
    model = tiny_model(**{"decay.kind": "hgrn2", "pos": "tpe"})
    decayed, other = model.param_groups(weight_decay=0.1)
    assert decayed["weight_decay"] == 0.1 and other["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decayed) | ids(other) == {id(p) for p in model.parameters()} and not ids(decayed) & ids(other)
    for p in [model.embed.weight, model.norm.weight, model.lower_bound_logits, model.input_pe.decay_logit,
              model.blocks[0].mixer.norm.weight]:
        assert id(p) in ids(other)
    for p in [model.lm_head.weight, model.blocks[0].mixer.q_proj.weight, model.blocks[1].ffn.w3.weight]:
        assert id(p) in ids(decayed)
    for kind in ["mamba2", "simple", "tnl_l"]:
        m = tiny_model(**{"decay.kind": kind, "decay.granularity": "scalar"})
        tagged = [p for p in m.blocks[0].mixer.decay.parameters() if getattr(p, "_no_weight_decay", False)]
        assert tagged and all(id(p) in ids(m.param_groups(0.1)[1]) for p in tagged)
    (everything,) = model.param_groups(0.1, decay_everything=True)
    assert len(everything["params"]) == len(list(model.parameters()))
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3)
    model(torch.randint(0, 256, (1, 4))).mean().backward()
    opt.step()


def test_dropout_only_in_training():
    model = tiny_model(dropout=0.5)
    ids = torch.randint(0, 256, (1, 6))
    model.train()
    assert not torch.equal(model(ids), model(ids))
    model.eval()
    assert torch.equal(model(ids), model(ids))


def test_set_backend_checks_the_name():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown backend"):
        model.set_backend("fast")
    ids = torch.randint(0, 256, (1, 5))
    ref = model(ids)
    assert torch.allclose(model.set_backend("recurrent")(ids), ref, atol=1e-5)


@pytest.mark.parametrize("ov", [{"decay.kind": "gla", "decay.share": True, "pos": "rope"},
                                {"decay.kind": "lightnet", "pos": "tpe"}, {"mixer": "softmax"}])
def test_bf16_autocast_forward_and_decoding(ov):
    model = tiny_model(**ov)
    ids = torch.randint(0, 256, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, cache = model(ids, use_cache=True)
        step, _ = model(ids[:, :1], cache=cache)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all() and torch.isfinite(step).all()
