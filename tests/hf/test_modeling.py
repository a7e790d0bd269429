"""DecayLabForCausalLM against DecayLM on every design combination: logits, loss, the cache, greedy generate()."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decaylab.hf.cache import DecayLabCache
from decaylab.hf.modeling import DecayLabForCausalLM
from tests.conftest import assert_close
from tests.hf.conftest import random_model
from tests.model.test_combinations import expected_valid, grid

COMBINATIONS = [ov for ov in grid() if expected_valid(ov)]


@pytest.mark.parametrize("ov", COMBINATIONS, ids=lambda ov: "-".join(str(v) for v in ov.values()))
def test_matches_decaylm(ov):
    model = random_model(ov)
    hf = DecayLabForCausalLM.from_decaylm(model)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids)
        out = hf(ids)
        assert out.cache is None and out.loss is None
        assert_close("logits", ref, out.logits, 1e-5)

        # Prefill 8 tokens through the HF cache, then one token at a time: the parallel forward's logits.
        first = hf(ids[:, :8], use_cache=True)
        cache = first.cache
        assert isinstance(cache, DecayLabCache) and cache.get_seq_length() == 8 and len(cache) == 2
        steps = [first.logits]
        for t in range(8, 12):
            step = hf(ids[:, t : t + 1], cache=cache)
            assert step.cache is cache
            steps.append(step.logits)
        assert cache.get_seq_length() == 12
        assert_close("decoded logits", ref, torch.cat(steps, dim=1), 1e-5)

    # Greedy generate() returns DecayLM.generate's tokens exactly.
    prompt = ids[:, :5]
    expected = model.generate(prompt, max_new_tokens=8, temperature=0)
    got = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert torch.equal(got, expected)


def test_loss_and_logits_to_keep():
    model = random_model({"decay.kind": "gla", "pos": "lrpe"})
    hf = DecayLabForCausalLM.from_decaylm(model)
    ids = torch.randint(0, 256, (3, 10))
    labels = ids.clone()
    labels[0, :4] = -100
    out = hf(ids, labels=labels)
    ref = F.cross_entropy(model(ids)[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert torch.allclose(out.loss, ref, rtol=1e-6)
    out.loss.backward()  # trains through the wrapper: the gradients land in DecayLM's parameters
    assert model.embed.weight.grad is not None and torch.isfinite(model.embed.weight.grad).all()
    with torch.no_grad():
        full = hf(ids).logits
        assert_close("last logits", full[:, -1:], hf(ids, logits_to_keep=1).logits, 1e-6)
        assert_close("kept logits", full[:, [0, 4]], hf(ids, logits_to_keep=torch.tensor([0, 4])).logits, 1e-6)
        loss, logits = hf(ids, labels=labels, return_dict=False)
        assert torch.equal(logits, full) and torch.allclose(loss, ref, rtol=1e-6)


def test_shares_the_modules():
    model = random_model({})
    hf = DecayLabForCausalLM.from_decaylm(model)
    assert hf.model is model and hf.get_input_embeddings() is model.embed
    assert hf.get_output_embeddings() is model.lm_head
    assert all(name.startswith("model.") for name in hf.state_dict())
    assert hf.num_parameters() == model.num_params()


def test_bad_inputs():
    hf = DecayLabForCausalLM.from_decaylm(random_model({}))
    ids = torch.randint(0, 256, (2, 6))
    with pytest.raises(ValueError, match="inputs_embeds"):
        hf(inputs_embeds=torch.zeros(2, 6, 32))
    from transformers import DynamicCache

    with pytest.raises(ValueError, match="DecayLabCache"):
        hf(ids, cache=DynamicCache())
    holes = torch.tensor([[1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="one block of real tokens"):
        hf(ids, attention_mask=holes)
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        assert torch.equal(hf(ids, attention_mask=right).logits, hf(ids).logits)  # causal: right padding is inert
    with pytest.raises(ValueError, match="pad them on the left"):
        hf(ids, attention_mask=right, use_cache=True)
    cache = hf(ids, use_cache=True).cache
    with pytest.raises(ValueError, match="cannot be rewound"):
        cache.crop(2)


def test_tied_embeddings_save_and_load(tmp_path):
    model = random_model({"tie_embeddings": True})
    hf = DecayLabForCausalLM.from_decaylm(model)
    assert hf.get_output_embeddings() is None  # nothing for transformers to tie or untie: the model scores with embed
    hf.save_pretrained(tmp_path / "tied")
    loaded = DecayLabForCausalLM.from_pretrained(tmp_path / "tied")
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close("logits", model(ids), loaded(ids).logits, 1e-6)
