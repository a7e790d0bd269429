"""Token losses per position against a direct cross-entropy over the same batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from decaylab.evaluation.perplexity import bits_per_byte, perplexity, position_losses

VOCAB = 11


class BigramLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(VOCAB, VOCAB)

    def forward(self, ids):
        return self.table(ids)


def _batches(seed, shapes):
    g = torch.Generator().manual_seed(seed)
    out = []
    for B, T in shapes:
        x = torch.randint(0, VOCAB, (B, T), generator=g)
        y = torch.randint(0, VOCAB, (B, T), generator=g)
        y[torch.rand(B, T, generator=g) < 0.2] = -100  # some targets carry no loss
        out.append((x, y))
    return out


def test_mean_and_position_losses_match_direct_cross_entropy():
    model = BigramLM()
    batches = _batches(0, [(3, 12), (2, 12), (4, 12)])
    result = position_losses(model, batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        per_token = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100, reduction="none")
    per_token = per_token.view(y.shape)
    scored = y != -100
    assert result.tokens == int(scored.sum())
    assert result.mean_loss == pytest.approx(float(per_token[scored].mean()), rel=1e-6)
    buckets = result.by_position(5)
    assert [b[0] for b in buckets] == [0, 5, 10]
    for start, loss in buckets:
        cols = slice(start, start + 5)
        assert loss == pytest.approx(float(per_token[:, cols][scored[:, cols]].mean()), rel=1e-6)


def test_uniform_model_has_perplexity_equal_to_vocab():
    class Uniform(BigramLM):
        def forward(self, ids):
            return torch.zeros(*ids.shape, VOCAB) + 0 * self.table.weight.sum()

    result = position_losses(Uniform(), _batches(1, [(2, 9)]))
    assert result.mean_loss == pytest.approx(math.log(VOCAB))
    assert perplexity(result.mean_loss) == pytest.approx(VOCAB)


def test_windows_of_different_lengths_and_token_cap():
    result = position_losses(BigramLM(), _batches(2, [(2, 4), (2, 10)]))
    assert len(result.count) == 10 and result.count[5:].sum() <= 2 * 5
    capped = position_losses(BigramLM(), _batches(3, [(2, 10)] * 5), max_tokens=1)
    assert 0 < capped.tokens <= 20  # stopped after the first batch


def test_helpers():
    assert perplexity(1000.0) is None  # overflow -> None instead of inf (not valid JSON)
    assert bits_per_byte(math.log(2), tokens=100, num_bytes=400) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="positive"):
        bits_per_byte(1.0, tokens=0, num_bytes=1)
    empty = position_losses(BigramLM(), [])
    with pytest.raises(ValueError, match="no tokens were scored"):
        empty.mean_loss
