"""Length extrapolation: per-length perplexity equals direct scoring of the same windows; skips and reuse."""

from __future__ import annotations

import math

import pytest
import torch

from decaylab.evaluation.extrapolation import POSITION_BUCKETS, length_extrapolation
from decaylab.evaluation.perplexity import position_losses

VOCAB = 13
STREAM = torch.randint(0, VOCAB, (2000,), generator=torch.Generator().manual_seed(0))


class CountingLM(torch.nn.Module):
    """Logits depend on the token and on its position, so longer windows change the loss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(VOCAB, VOCAB)

    def forward(self, ids):
        position = torch.arange(ids.shape[1], dtype=torch.float32)[None, :, None]  # [1, T, 1]
        return self.table(ids) * (1 + position / 64)


def windows(seq_len, batch_size, calls=None):
    """Non-overlapping windows over STREAM, the last one padded with -100 targets."""
    if calls is not None:
        calls.append(seq_len)
    xs, ys = [], []
    for start in range(0, len(STREAM) - 1, seq_len):
        x = torch.zeros(seq_len, dtype=torch.long)
        y = torch.full((seq_len,), -100, dtype=torch.long)
        n = min(seq_len, len(STREAM) - 1 - start)
        x[:n], y[:n] = STREAM[start : start + n], STREAM[start + 1 : start + n + 1]
        xs.append(x), ys.append(y)
    for i in range(0, len(xs), batch_size):
        yield torch.stack(xs[i : i + batch_size]), torch.stack(ys[i : i + batch_size])


def test_each_length_matches_direct_scoring():
    model = CountingLM()
    out = length_extrapolation(model, windows, 50, (1, 2, 4))
    assert out["extrapolation_context"] == {"1": 50, "2": 100, "4": 200}
    for factor in ("1", "2", "4"):
        direct = position_losses(model, windows(50 * int(factor), 3))
        # fp32 logits, different batch sizes: equal up to float32 summation order
        assert out["extrapolation_loss"][factor] == pytest.approx(direct.mean_loss, rel=1e-6)
        assert out["extrapolation"][factor] == pytest.approx(math.exp(direct.mean_loss), rel=1e-6)
    assert len(set(out["extrapolation"].values())) == 3  # position-dependent model: lengths differ
    curve = out["loss_by_position"]
    assert out["loss_by_position_context"] == 200
    bucket = math.ceil(200 / POSITION_BUCKETS)  # 4 positions per point, 50 points
    assert [p[0] for p in curve] == list(range(0, 200, bucket))
    direct = position_losses(model, windows(200, 3))
    assert [p[1] for p in curve] == pytest.approx([p[1] for p in direct.by_position(bucket)], rel=1e-6)


def test_known_results_are_reused_and_long_lengths_skipped():
    model = CountingLM()
    calls = []
    known = {50: position_losses(model, windows(50, 4))}
    out = length_extrapolation(
        model, lambda t, b: windows(t, b, calls), 50, (1, 2, 64), known=known, available_tokens=len(STREAM) - 1
    )
    assert calls == [100]  # 1x reused; 64x = 3200 tokens is longer than the 1999 scorable ones: skipped
    assert out["extrapolation_loss"]["1"] == known[50].mean_loss
    assert out["extrapolation"]["64"] is None and out["extrapolation_context"]["64"] == 3200
    assert out["loss_by_position_context"] == 100  # the longest length actually measured


def test_bad_factors():
    with pytest.raises(ValueError, match="integers >= 1"):
        length_extrapolation(CountingLM(), windows, 50, (0, 2))
    with pytest.raises(ValueError, match="integers >= 1"):
        length_extrapolation(CountingLM(), windows, 50, (1.5,))


def test_gpu_batches_grow_with_a_small_vocabulary_and_cpu_batches_do_not():
    from decaylab.evaluation.extrapolation import BATCH_TOKENS, batch_tokens_for

    cuda = torch.device("cuda")
    assert batch_tokens_for(torch.device("cpu"), 10_000) == BATCH_TOKENS
    assert batch_tokens_for(cuda, 10_000) == 32768  # PTB: 1.3 GB of float32 logits
    assert batch_tokens_for(cuda, 100) == 65536  # capped
    assert batch_tokens_for(cuda, 50_432) == BATCH_TOKENS  # GPT-2's vocabulary: never fewer than on a CPU
