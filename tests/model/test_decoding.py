"""Decoding steps over fixed cache tensors updated in place (``decaylab.model.decoding``), without a graph on a CPU:
token by token they give the ordinary step's logits and caches, and the cache they start from stays intact."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from decaylab import DecayLM, ModelConfig
from decaylab.layers import KVCache, StaticKVCache
from decaylab.model import decoding
from decaylab.model.decoding import GRAPH_MIN_STEPS, EagerDecoder, StaticDecoder, make_decoder
from decaylab.model.generation import generate, prefill
from decaylab.model.padding import prefill_left_padded
from tests.conftest import assert_close

# One of each cache a layer or the input can carry: scalar and vector decay, a decay state (lightnet, lssp),
# TPE's state, rope and lrpe offsets, a softmax KV cache.
MODELS = {
    "scalar": {"decay.kind": "mamba2", "decay.granularity": "scalar"},
    "vector-rope": {"decay.kind": "simple", "pos": "rope"},
    "lightnet-lrpe": {"decay.kind": "lightnet", "pos": "lrpe"},
    "lssp-shared-rope": {"decay.kind": "lssp", "decay.share": True, "pos": "rope"},
    "tnl-tpe": {"decay.kind": "tnl", "decay.granularity": "scalar", "pos": "tpe"},
    "gla-short-conv": {"decay.kind": "gla", "short_conv": 4},
    "softmax-rope": {"mixer": "softmax", "pos": "rope"},
}
PROMPT = 37  # an awkward length: no chunk or table size divides it
STEPS = 4


def random_model(ov: dict, **sizes) -> DecayLM:
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", {**ov, **sizes})).eval()
    with torch.no_grad():  # off the init (zero FFN outputs, ones), so that every part carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def token_ids(*shape: int, seed: int = 1, vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def check_caches(static, eager) -> None:
    """The static cache holds what the eager one does: states exactly; a KV cache's filled slots."""
    assert static.offset.tolist() == (eager.offset.tolist() if isinstance(eager.offset, torch.Tensor)
                                      else [eager.offset] * static.offset.shape[0])  # fmt: skip
    assert (static.input_state is None) == (eager.input_state is None)
    if eager.input_state is not None:
        assert torch.equal(static.input_state, eager.input_state)
    for s, e in zip(static.layers, eager.layers):
        if isinstance(e, KVCache):
            n = e.length
            assert s.length.tolist() == [n]
            # past layer 0 a key comes from the output of a layer that attended over its capacity: close, not equal
            assert_close("keys", e.k, s.key_buffer[:, :, :n], 1e-5)
            assert_close("values", e.v, s.value_buffer[:, :, :n], 1e-5)
            assert torch.equal(s.valid[:, :n], torch.ones_like(s.valid[:, :n]) if e.valid is None else e.valid)
            assert not s.valid[:, n:].any()
        else:
            assert torch.equal(s.state, e.state)
            assert (s.decay_state is None) == (e.decay_state is None)
            if e.decay_state is not None:
                assert torch.equal(s.decay_state, e.decay_state)


def step_both(model, cache, tail: torch.Tensor) -> None:
    """Steps ``tail [B, n]`` one token at a time, eagerly and in place from the same ``cache``, comparing them."""
    decoder = StaticDecoder(model, cache, tail.shape[1], graph=False)
    exact = model.cfg.mixer == "linear"  # the same kernels; softmax attends over its capacity, masked
    for t in range(tail.shape[1]):
        ids = tail[:, t : t + 1]
        logits, cache = model(ids, cache=cache)
        static_logits = decoder(ids)
        if exact:
            assert torch.equal(static_logits, logits[:, -1]), f"step {t}"
        else:
            assert_close(f"step {t}", logits[:, -1], static_logits, 1e-5)
        check_caches(decoder.cache, cache)


@pytest.mark.parametrize("ov", MODELS.values(), ids=MODELS.keys())
@torch.no_grad()
def test_static_steps_give_the_eager_logits_and_caches(ov):
    model, ids = random_model(ov), token_ids(3, PROMPT + STEPS)
    # The capacity is that of generate: the softmax decoder takes over the prefill's buffers; the eager steps
    # from the same cache then copy theirs (the aliasing rule), so both read what they should.
    _, cache = prefill(model, ids[:, :PROMPT], chunk_size=16, capacity=PROMPT + STEPS)
    step_both(model, cache, ids[:, PROMPT:])


@pytest.mark.parametrize("ov", [MODELS["lightnet-lrpe"], MODELS["gla-short-conv"], MODELS["softmax-rope"]],
                         ids=["lightnet-lrpe", "gla-short-conv", "softmax"])
@torch.no_grad()
def test_a_left_padded_batch_steps_in_place_at_each_rows_position(ov):
    model = random_model(ov)
    prompts = [token_ids(1, 9, seed=2), token_ids(1, 4, seed=3), token_ids(1, 7, seed=4)]
    padded = torch.cat([torch.cat([torch.full((1, 9 - p.shape[1]), 7), p], 1) for p in prompts])
    _, cache = prefill_left_padded(model, padded, torch.tensor([0, 5, 2]), logits_to_keep=1)
    step_both(model, cache, token_ids(3, STEPS, seed=5))


class HostReads(TorchDispatchMode):
    """Records the ops that, on a GPU, wait for it to read a value back (or copy host data in): a CUDA graph
    capture fails on them."""

    OPS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
           torch.ops.aten.lift_fresh.default)  # fmt: skip

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.OPS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("ov", MODELS.values(), ids=MODELS.keys())
@torch.no_grad()
def test_a_static_step_reads_nothing_back_to_the_host(ov):
    model, ids = random_model(ov), token_ids(2, 12)
    _, cache = prefill(model, ids[:, :8], capacity=12)
    decoder = StaticDecoder(model, cache, 4, graph=False)
    decoder(ids[:, 8:9])  # the first step may set things up (a table, a device copy of constants)
    with HostReads() as reads:
        decoder(ids[:, 9:10])
    assert reads.seen == []


@torch.no_grad()
def test_the_decoder_takes_only_the_steps_it_has_room_for():
    model, ids = random_model(MODELS["softmax-rope"]), token_ids(2, 8)
    _, cache = model(ids[:, :5], use_cache=True)
    decoder = StaticDecoder(model, cache, 2, graph=False)
    layer = decoder.cache.layers[0]
    assert isinstance(layer, StaticKVCache) and layer.capacity == 7  # the prefill's full buffers moved: room made
    decoder(ids[:, 5:6])
    decoder(ids[:, 6:7])
    with pytest.raises(ValueError, match="every step it was built for"):
        decoder(ids[:, 7:8])
    with pytest.raises(ValueError, match="one token a step"):
        layer.append(torch.zeros(2, 2, 2, 16), torch.zeros(2, 2, 2, 16))


class OtherCache(NamedTuple):
    state: torch.Tensor


def test_what_cannot_step_in_place_is_refused_or_left_eager():
    model, ids = random_model(MODELS["scalar"]), token_ids(1, 4)
    with torch.no_grad():
        _, cache = model(ids, use_cache=True)
    odd = cache._replace(layers=(OtherCache(cache.layers[0].state), *cache.layers[1:]))
    with pytest.raises(ValueError, match=r"layer 0's cache \(OtherCache\) has no fixed-size form"):
        StaticDecoder(model, odd, 1, graph=False)
    with pytest.raises(ValueError, match="a CUDA graph needs a CUDA device"):
        StaticDecoder(model, cache, 1, graph=True)
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        StaticDecoder(model, cache, 1, graph=False)
    model.eval()
    assert isinstance(make_decoder(model, cache, 1, "auto"), EagerDecoder)  # a CPU: no graph, no error
    with pytest.raises(ValueError, match="cuda_graph='on' cannot be honoured: the model is on cpu"):
        make_decoder(model, cache, 1, "on")


def test_auto_takes_a_graph_only_for_enough_steps(monkeypatch):
    model, ids = random_model(MODELS["scalar"]), token_ids(1, 4)
    with torch.no_grad():
        _, cache = model(ids, use_cache=True)
    monkeypatch.setattr(decoding, "unsupported", lambda *args, **kwargs: None)  # as on a CUDA card that can take the graph
    assert isinstance(make_decoder(model, cache, GRAPH_MIN_STEPS - 1, "auto"), EagerDecoder)
    assert isinstance(make_decoder(model, cache, GRAPH_MIN_STEPS, "auto"), StaticDecoder)
    assert isinstance(make_decoder(model, cache, 1, "on"), StaticDecoder)  # "on" insists, however short


def test_generate_checks_cuda_graph():
    model, prompt = random_model(MODELS["scalar"]), token_ids(1, 3)
    with pytest.raises(ValueError, match="cuda_graph='yes' must be one of auto, on, off"):
        generate(model, prompt, 2, cuda_graph="yes")
    with pytest.raises(ValueError, match="cuda_graph='on' cannot be honoured"):
        model.generate(prompt, 2, cuda_graph="on")
