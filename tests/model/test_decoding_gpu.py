"""Decoding replayed from a CUDA graph gives eager decoding's tokens and logits on a GPU (the Triton one-token
kernel inside the graph: head dim 64). Skipped without CUDA (the ``gpu`` marker)."""

from __future__ import annotations

import pytest
import torch

from decaylab.model.decoding import StaticDecoder
from decaylab.model.generation import generate, prefill
from decaylab.model.padding import prefill_left_padded
from tests.conftest import TOLERANCE, assert_close
from tests.model.test_decoding import MODELS, PROMPT, random_model, token_ids

SIZES = {"d_model": 128, "n_heads": 2}  # head dim 64: the Triton kernels' shapes
NEW_TOKENS = 24


def gpu_model(ov: dict, dtype: torch.dtype):
    return random_model(ov, **SIZES).to(device="cuda", dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("ov", MODELS.values(), ids=MODELS.keys())
def test_graphed_generate_gives_the_eager_tokens(ov, batch):
    model = gpu_model(ov, torch.float32)
    prompt = token_ids(batch, PROMPT).cuda()
    eager = generate(model, prompt, NEW_TOKENS, temperature=0, cuda_graph="off")
    graphed = generate(model, prompt, NEW_TOKENS, temperature=0, cuda_graph="on")
    assert torch.equal(graphed, eager)
    assert torch.equal(generate(model, prompt, NEW_TOKENS, temperature=0), eager)  # auto: the graph on CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("ov", MODELS.values(), ids=MODELS.keys())
@torch.no_grad()
def test_graphed_steps_give_the_eager_logits(ov, batch, dtype):
    model = gpu_model(ov, dtype)
    ids = token_ids(batch, PROMPT + NEW_TOKENS).cuda()
    _, cache = prefill(model, ids[:, :PROMPT], chunk_size=16, capacity=PROMPT + NEW_TOKENS)
    decoder = StaticDecoder(model, cache, NEW_TOKENS, graph=True)
    for t in range(PROMPT, PROMPT + NEW_TOKENS):
        logits, cache = model(ids[:, t : t + 1], cache=cache)
        assert_close(f"position {t}", logits[:, -1], decoder(ids[:, t : t + 1]), TOLERANCE[dtype])
    assert decoder.graph is not None
    if model.cfg.mixer == "linear":
        for static, eager in zip(decoder.cache.layers, cache.layers):
            assert_close("state", eager.state, static.state, TOLERANCE[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("ov", [MODELS["lightnet-lrpe"], MODELS["softmax-rope"]], ids=["lightnet-lrpe", "softmax"])
@torch.no_grad()
def test_a_graphed_left_padded_batch_decodes_each_row_at_its_position(ov):
    model = gpu_model(ov, torch.float32)
    prompts = [token_ids(1, 37, seed=2), token_ids(1, 20, seed=3), token_ids(1, 31, seed=4)]
    padded = torch.cat([torch.cat([torch.full((1, 37 - p.shape[1]), 7), p], 1) for p in prompts]).cuda()
    _, cache = prefill_left_padded(model, padded, torch.tensor([0, 17, 6]), logits_to_keep=1)
    tail = token_ids(3, 8, seed=5).cuda()
    decoder = StaticDecoder(model, cache, tail.shape[1], graph=True)
    for t in range(tail.shape[1]):
        logits, cache = model(tail[:, t : t + 1], cache=cache)
        assert_close(f"step {t}", logits[:, -1], decoder(tail[:, t : t + 1]), TOLERANCE[torch.float32])
