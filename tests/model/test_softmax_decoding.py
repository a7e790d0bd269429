"""Decoding a softmax DecayLM from its KV cache (appended in place): the full forward's logits through buffer growth,
left-padded batches, branches and reordered rows; generate() allocates the cache once."""

from __future__ import annotations

import torch

from decaylab import DecayLM, ModelConfig
from decaylab.layers import KVCache
from decaylab.model.generation import generate, prefill
from decaylab.model.padding import map_rows, prefill_left_padded
from tests.conftest import assert_close


def softmax_model() -> DecayLM:
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", {"mixer": "softmax", "pos": "rope"})).eval()
    with torch.no_grad():
        for block in model.blocks:  # the FFN output starts at zero: make every layer count
            block.ffn.w3.weight.normal_(0, 0.02)
    return model


def ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_token_by_token_logits_equal_the_full_forward_through_growths():
    model, x = softmax_model(), ids(2, 20)
    full = model(x)
    logits, cache = model(x[:, :3], use_cache=True)
    steps, moves = [logits], 0
    for t in range(3, 20):
        logits, new = model(x[:, t : t + 1], cache=cache)
        moves += new.layers[0].key_buffer is not cache.layers[0].key_buffer
        steps.append(logits)
        cache = new
    assert_close("decoded", full, torch.cat(steps, 1), 1e-5)
    assert moves == 3 and cache.layers[0].capacity == 24  # 3 -> 6 -> 12 -> 24


@torch.no_grad()
def test_a_left_padded_batch_decodes_each_row_as_if_alone():
    model = softmax_model()
    prompts, tail = [ids(1, 5, seed=2), ids(1, 2, seed=3)], ids(2, 9, seed=4)
    padded = torch.cat([prompts[0], torch.cat([torch.full((1, 3), 7), prompts[1]], 1)])
    _, cache = prefill_left_padded(model, padded, torch.tensor([0, 3]))
    steps = []
    for t in range(tail.shape[1]):  # 5 positions held, 14 after: the buffers move twice, keeping the padding mask
        logits, cache = model(tail[:, t : t + 1], cache=cache)
        steps.append(logits)
    assert cache.layers[0].capacity == 20 and cache.layers[0].valid[1, :3].tolist() == [False] * 3
    for b, prompt in enumerate(prompts):
        alone = model(torch.cat([prompt, tail[b : b + 1]], 1))[:, prompt.shape[1] :]
        assert_close(f"row {b}", alone, torch.cat(steps, 1)[b : b + 1], 1e-5)


@torch.no_grad()
def test_two_branches_from_one_cache_and_reordered_rows_each_continue_correctly():
    model, x = softmax_model(), ids(2, 8)
    a, b = ids(2, 2, seed=5), ids(2, 2, seed=6)
    _, cache = prefill(model, x, capacity=16)
    _, branch_a = model(a[:, :1], cache=cache)  # writes in place
    logits_b, _ = model(b, cache=cache)  # cache is stale now: copies
    logits_a, branch_a = model(a[:, 1:], cache=branch_a)  # still the newest over the shared buffers: in place
    assert_close("branch a", model(torch.cat([x, a], 1))[:, -1:], logits_a, 1e-5)
    assert_close("branch b", model(torch.cat([x, b], 1))[:, -2:], logits_b, 1e-5)
    flipped = map_rows(branch_a, lambda t: t.flip(0))  # as beam search reorders rows: new buffers, shared counter
    nxt = ids(2, 1, seed=7)
    logits_f, _ = model(nxt.flip(0), cache=flipped)
    logits_a2, _ = model(nxt, cache=branch_a)
    ref = model(torch.cat([x, a, nxt], 1))[:, -1:]
    assert_close("reordered", ref.flip(0), logits_f, 1e-5)
    assert_close("original after the reordered one", ref, logits_a2, 1e-5)


def test_generate_allocates_each_kv_cache_once(monkeypatch):
    model, prompt = softmax_model(), ids(2, 6)
    moves = []
    moved = KVCache._moved
    monkeypatch.setattr(KVCache, "_moved", lambda self, *a: moves.append(a[0]) or moved(self, *a))
    out = generate(model, prompt, max_new_tokens=12, temperature=0, prefill_chunk_size=4)
    assert moves == [6 + 12 - 1] * model.cfg.n_layers  # once per layer, at the first prefill piece
    monkeypatch.undo()
    with torch.no_grad():  # greedy: each new token is the argmax of a full forward over what came before
        for t in range(6, 18):
            assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])
