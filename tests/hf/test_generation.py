"""generate() through transformers: left-padded batches, sampling arguments, several sequences, beam search."""

from __future__ import annotations

import pytest
import torch

from decaylab.hf.modeling import DecayLabForCausalLM
from tests.conftest import assert_close
from tests.hf.conftest import random_model

PADDED = [
    {"pos": "none"},
    {"pos": "rope", "decay.kind": "mamba2"},
    {"pos": "lrpe", "decay.kind": "lightnet", "decay.share": True},  # a stateful decay: its normalizer per row
    {"pos": "tpe", "decay.kind": "lssp", "decay.granularity": "scalar"},  # TPE carries an input state
    {"pos": "rope", "decay.kind": "hgrn2"},  # per-layer lower bound
    {"mixer": "softmax", "pos": "rope"},
    {"mixer": "softmax", "pos": "lrpe"},
]


def left_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :], mask[b, T - len(r) :] = r, 1
    return ids, mask


@pytest.mark.parametrize("ov", PADDED, ids=lambda ov: "-".join(str(v) for v in ov.values()))
def test_left_padded_batch_equals_rows_alone(ov):
    g = torch.Generator().manual_seed(2)
    rows = [torch.randint(1, 256, (n,), generator=g) for n in (6, 11, 2)]
    ids, mask = left_pad(rows)

    # fp32 logits of the padded batch at the real positions = each row run alone.
    model = random_model(ov)
    hf = DecayLabForCausalLM.from_decaylm(model)
    with torch.no_grad():
        logits = hf(ids, attention_mask=mask).logits
        for b, r in enumerate(rows):
            assert_close(f"row {b}", model(r[None])[0], logits[b, ids.shape[1] - len(r) :], 1e-5)

    # Greedy decoding of the batch = DecayLM.generate on each row alone (fp64: no near-ties between the two).
    model = random_model(ov, torch.float64)
    hf = DecayLabForCausalLM.from_decaylm(model)
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False, pad_token_id=0)
    for b, r in enumerate(rows):
        assert torch.equal(out[b, ids.shape[1] :], model.generate(r[None], 7, temperature=0)[0, len(r) :]), b


def test_sampling_matches_decaylm_sampling():
    """Temperature, top-k and top-p as transformers applies them give DecayLM.generate's draws from the same seed."""
    model = random_model({"decay.kind": "gla", "pos": "rope"}, torch.float64, scale=0.5)
    hf = DecayLabForCausalLM.from_decaylm(model)
    prompt = torch.randint(0, 256, (2, 4), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(prompt)
    for args in ({"temperature": 1.0, "top_k": None, "top_p": None}, {"temperature": 0.7, "top_k": 20, "top_p": None},
                 {"temperature": 1.3, "top_k": None, "top_p": 0.8}):
        torch.manual_seed(11)
        got = hf.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=True, **args)
        expected = model.generate(prompt, 10, generator=torch.Generator().manual_seed(11), **args)
        assert torch.equal(got, expected), args
    # top_k=1 is greedy; a different seed draws different tokens.
    greedy = model.generate(prompt, 10, temperature=0)
    assert torch.equal(hf.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=1), greedy)
    torch.manual_seed(12)
    other = hf.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=1.0, top_k=None)
    assert not torch.equal(other, expected)


def test_several_sequences_and_beam_search():
    model = random_model({"decay.kind": "lightnet", "pos": "lrpe"}, torch.float64, scale=0.5)
    hf = DecayLabForCausalLM.from_decaylm(model)
    prompt = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(prompt)
    torch.manual_seed(0)
    many = hf.generate(prompt, attention_mask=mask, max_new_tokens=6, do_sample=True, num_return_sequences=3)
    assert many.shape == (6, 11) and torch.equal(many[:3, :5], prompt[:1].expand(3, 5))
    assert len({tuple(r.tolist()) for r in many[:3]}) > 1

    # Beam search reorders the cache rows; its scores must equal a fresh forward over the returned sequences.
    out = hf.generate(prompt, attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False,
                      length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
    seqs = out.sequences
    with torch.no_grad():
        logp = torch.log_softmax(model(seqs), dim=-1)[:, 4:-1].gather(-1, seqs[:, 5:, None]).squeeze(-1).sum(-1)
    assert_close("beam scores", logp, out.sequences_scores, 1e-6)  # transformers scores in fp32
