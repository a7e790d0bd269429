"""The chunked language-model loss against the plain formula: value and both gradients, ignored rows, blocks."""

from __future__ import annotations

import pytest
import torch

from decaylab import DecayLM, ModelConfig
from decaylab.ops.linear_cross_entropy import chunked, linear_cross_entropy, reference, rows_per_block


def _inputs(n, d, vocab, ignored=0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(vocab, d, generator=g) * 0.3).to(dtype).requires_grad_()
    y = torch.randint(0, vocab, (n,), generator=g)
    y[torch.randperm(n, generator=g)[:ignored]] = -100
    return x, w, y


def _loss_and_grads(fn, x, w, y, reduction, upstream):
    x.grad = w.grad = None
    loss = fn(x, w, y, reduction=reduction)
    (loss * upstream).backward()
    return loss.detach(), x.grad.clone(), w.grad.clone()


# n not a multiple of the block (rows_per_block(1000) = 1024 > n: one partial block; of 20000 = 32), ignored rows
@pytest.mark.parametrize("n,d,vocab,ignored", [(531, 24, 20000, 40), (77, 16, 1000, 0), (1, 8, 50, 0)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_matches_the_formula_fp64_exactly_enough(n, d, vocab, ignored, reduction):
    x, w, y = _inputs(n, d, vocab, ignored, torch.float64)
    want = _loss_and_grads(reference, x, w, y, reduction, 0.7)
    # fp64 in, fp32 inside: the chunked loss works in fp32 like the reference's .float() logits
    got = _loss_and_grads(chunked, x, w, y, reduction, 0.7)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=2e-5, atol=2e-6)


def test_chunked_matches_in_fp32_and_bf16():
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        x, w, y = _inputs(300, 32, 2000, 17, dtype, seed=1)
        want = _loss_and_grads(reference, x, w, y, "mean", 1.0)
        got = _loss_and_grads(chunked, x, w, y, "mean", 1.0)
        assert got[1].dtype == dtype and got[2].dtype == dtype
        for a, b in zip(got, want):
            torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


def test_blocks_fill_about_block_bytes():
    assert rows_per_block(10_000) == 64 and rows_per_block(100_000) == 16 and rows_per_block(256) == 4096


def test_all_rows_ignored_gives_nan_like_torch():
    x, w, y = _inputs(5, 4, 7)
    y[:] = -100
    assert torch.isnan(chunked(x, w, y)) and torch.isnan(reference(x, w, y))


def test_bad_shapes_and_reduction_are_named():
    x, w, y = _inputs(5, 4, 7)
    with pytest.raises(ValueError, match="need x \\[N, d\\]"):
        chunked(x, w.T, y)
    with pytest.raises(ValueError, match="reduction='none'"):
        chunked(x, w, y, reduction="none")


@pytest.mark.parametrize("tie", [False, True])
def test_the_model_loss_equals_cross_entropy_of_its_logits(tie):
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", {"tie_embeddings": tie, "decay.kind": "gla"}))
    ids, targets = torch.randint(0, 256, (3, 11)), torch.randint(0, 256, (3, 11))
    targets[0, :4] = -100
    loss = model(ids, targets=targets)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model(ids)
    want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    with pytest.raises(ValueError, match="targets= returns the loss only"):
        model(ids, targets=targets, return_decays=True)


def test_a_cpu_takes_the_chunked_loss_for_a_narrow_model_only():
    x, w, y = _inputs(40, 8, 3000, 3)
    assert torch.equal(linear_cross_entropy(x, w, y), chunked(x, w, y))
    x, w, y = _inputs(40, 96, 3000, 3)
    assert torch.equal(linear_cross_entropy(x, w, y), reference(x, w, y))
