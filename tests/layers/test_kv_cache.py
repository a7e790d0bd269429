"""KVCache: in-place appends into preallocated buffers, geometric growth, the aliasing rule, masks and autograd."""

from __future__ import annotations

import pytest
import torch

from decaylab.layers import KVCache, SoftmaxAttention
from decaylab.model import ModelConfig
from tests.conftest import assert_close


def layer_fp32() -> SoftmaxAttention:
    torch.manual_seed(0)
    layer = SoftmaxAttention(ModelConfig.from_preset("tiny", {"mixer": "softmax", "pos": "rope"}), layer_idx=0)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return layer


def keys(length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, length, 4, generator=g), torch.randn(2, 3, length, 4, generator=g)


def test_token_by_token_decoding_through_several_growths_matches_the_full_forward():
    layer = layer_fp32()
    x = torch.randn(2, 14, 32)
    with torch.no_grad():
        full = layer(x).y
        out = layer(x[:, :3], use_cache=True)  # no capacity given: the buffers hold exactly the 3 prompt keys
        ys, cache, capacities, moves = [out.y], out.cache, [out.cache.capacity], 0
        for t in range(3, 14):
            out = layer(x[:, t : t + 1], cache=cache, offset=t, use_cache=True)
            moved = out.cache.key_buffer is not cache.key_buffer
            assert moved == (t == cache.capacity)  # a new buffer only when the old one is full
            moves += moved
            ys.append(out.y)
            cache = out.cache
            capacities.append(cache.capacity)
    assert_close("decoded", full, torch.cat(ys, 1), 1e-5)
    assert moves == 3 and sorted(set(capacities)) == [3, 6, 12, 24]  # doubling
    assert cache.length == 14 and cache.k.shape == (2, 2, 14, 16) and cache.v.shape == (2, 2, 14, 16)


def test_an_append_writes_into_the_shared_buffer_and_leaves_the_older_object_intact():
    k, v = keys(5, 0)
    first = KVCache.from_tensors(k, v, capacity=8)
    assert first.capacity == 8 and first.length == 5 and torch.equal(first.k, k) and torch.equal(first.v, v)
    k1, v1 = keys(2, 1)
    second = first.append(k1, v1)
    assert second.key_buffer is first.key_buffer and second.value_buffer is first.value_buffer  # no copy
    assert torch.equal(second.k, torch.cat([k, k1], 2)) and torch.equal(second.v, torch.cat([v, v1], 2))
    assert torch.equal(first.k, k) and torch.equal(first.v, v)  # the old object still reads its 5 positions


def test_appending_to_a_stale_object_copies_and_corrupts_no_other():
    k, v = keys(4, 0)
    base = KVCache.from_tensors(k, v, capacity=16)
    (ka, va), (kb, vb), (kc, vc) = keys(1, 1), keys(3, 2), keys(2, 3)
    a = base.append(ka, va)  # base is the newest: a writes in place
    b = base.append(kb, vb)  # base is stale now: b gets buffers of its own
    assert a.key_buffer is base.key_buffer and b.key_buffer is not base.key_buffer and b.capacity == 16
    a2 = a.append(kc, vc)  # a is still the newest of the shared buffers: in place again
    b2 = b.append(kc, vc)
    a_again = a.append(kb, vb)  # a is stale after a2: a copy, a2 keeps its keys
    assert a2.key_buffer is base.key_buffer and b2.key_buffer is b.key_buffer
    assert a_again.key_buffer is not base.key_buffer
    for cache, parts in [(base, [k]), (a, [k, ka]), (b, [k, kb]), (a2, [k, ka, kc]), (b2, [k, kb, kc]),
                         (a_again, [k, ka, kb])]:
        assert torch.equal(cache.k, torch.cat(parts, 2))
    assert torch.equal(a2.v, torch.cat([v, va, vc], 2)) and torch.equal(b2.v, torch.cat([v, vb, vc], 2))


def test_a_capacity_hint_allocates_once_and_a_long_append_grows_past_doubling():
    k, v = keys(3, 0)
    cache = KVCache.from_tensors(k, v, capacity=12)
    buffer = cache.key_buffer
    for seed in range(9):
        cache = cache.append(*keys(1, seed + 1))
    assert cache.key_buffer is buffer and cache.length == 12
    grown = cache.append(*keys(30, 20))  # 42 positions: more than twice 12
    assert grown.capacity == 42 and grown.length == 42
    hinted = cache.append(*keys(1, 21), capacity=100)
    assert hinted.capacity == 100 and torch.equal(hinted.k[:, :, :12], cache.k)


def test_stacked_rows_are_left_padded_and_appends_mark_their_keys_valid():
    (k1, v1), (k2, v2) = keys(5, 0), keys(2, 1)
    stacked = KVCache.stack([KVCache.from_tensors(k1[:1], v1[:1]), KVCache.from_tensors(k2[:1], v2[:1])])
    assert stacked.valid.tolist() == [[True] * 5, [False] * 3 + [True] * 2]
    assert torch.equal(stacked.k[1, :, 3:], k2[0]) and torch.equal(stacked.k[0], k1[0])
    kn, vn = keys(1, 2)
    grown = stacked.append(kn, vn).append(kn, vn)  # the first append moves to doubled buffers, the second writes
    assert grown.capacity == 10 and grown.valid.tolist() == [[True] * 7, [False] * 3 + [True] * 4]
    assert torch.equal(grown.v[:, :, 5:], torch.cat([vn, vn], 2))


def test_decoding_with_gradients_copies_instead_of_writing_and_backpropagates():
    x = torch.randn(2, 7, 32)
    layer = layer_fp32()
    full = layer(x).y
    (full * torch.linspace(-1, 1, 32)).sum().backward()
    ref = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    out = layer(x[:, :3], use_cache=True, cache_capacity=16)
    ys, cache = [out.y], out.cache
    for t in range(3, 7):
        out = layer(x[:, t : t + 1], cache=cache, offset=t, use_cache=True)
        assert out.cache.key_buffer is not cache.key_buffer  # in place would change what autograd saved
        ys.append(out.y)
        cache = out.cache
    (torch.cat(ys, 1) * torch.linspace(-1, 1, 32)).sum().backward()
    for n, p in layer.named_parameters():
        assert_close(n, ref[n], p.grad, 1e-5)


def test_a_cache_made_in_inference_mode_continues_outside_it():
    layer = layer_fp32()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        full = layer(x).y
    with torch.inference_mode():
        first = layer(x[:, :4], use_cache=True, cache_capacity=8)
    with torch.no_grad():  # inference tensors cannot change outside inference mode: the append copies
        second = layer(x[:, 4:], cache=first.cache, offset=4, use_cache=True)
    assert_close("continued", full, torch.cat([first.y, second.y], 1), 1e-5)


def test_keys_of_other_rows_are_refused_with_the_fix():
    cache = KVCache.from_tensors(*keys(4, 0))
    k, v = keys(1, 1)
    with pytest.raises(ValueError, match="continue a cache with the rows it was made for"):
        cache.append(k[:1], v[:1])
    with pytest.raises(ValueError, match="do not continue this cache"):
        cache.append(k, v[..., :2])
