"""Every registered design combination: it builds, trains and decodes exactly, or it is refused at config time.

The grid enumerates ``DECAY_KINDS`` and ``POSITIONAL_ENCODINGS``, so a newly registered kind is covered at once.
Decoding (chunked prefill, then one token at a time with the cache) must reproduce the parallel logits in fp64.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from decaylab import DECAY_KINDS, DecayLM, ModelConfig
from decaylab.layers import POSITIONAL_ENCODINGS
from tests.conftest import assert_close


def grid():
    for kind, gran, share, pos in itertools.product(
        DECAY_KINDS.names(), ["vector", "scalar"], [False, True], POSITIONAL_ENCODINGS.names()
    ):
        yield {"decay.kind": kind, "decay.granularity": gran, "decay.share": share, "pos": pos}
    # Options beyond the four axes: the lower bound on every sigmoid-family kind, GLA's original form, softmax.
    for kind, pos in itertools.product(["gla", "simple"], ["none", "rope"]):
        yield {"decay.kind": kind, "decay.lower_bound": True, "decay.share": True, "pos": pos}
    yield {"decay.kind": "hgrn2", "decay.lower_bound": False, "decay.share": True}
    yield {"decay.kind": "gla", "decay.gla_form": "original", "decay.granularity": "scalar", "pos": "lrpe"}
    for pos in POSITIONAL_ENCODINGS.names():
        yield {"mixer": "softmax", "pos": pos}
    # The short convolution on q, k, v: with the layer's own key, with a key derived from the decay, with TPE.
    yield {"decay.kind": "mamba2", "short_conv": 4}
    yield {"decay.kind": "gla", "decay.share": True, "short_conv": 3, "pos": "rope"}
    yield {"decay.kind": "lightnet", "decay.granularity": "scalar", "short_conv": 2, "pos": "tpe"}


def expected_valid(ov) -> bool:
    cls = DECAY_KINDS.get(ov.get("decay.kind", "simple"))
    gran = ov.get("decay.granularity", "vector")
    ok = cls.supports_vector if gran == "vector" else cls.supports_scalar
    if ov.get("decay.share"):
        ok = ok and cls.supports_share and gran == "vector"
    return ok


def random_model(ov) -> DecayLM:
    torch.manual_seed(0)
    model = DecayLM(ModelConfig.from_preset("tiny", ov)).double()
    with torch.no_grad():  # move off the init (zero FFN outputs, ones) so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("ov", list(grid()), ids=lambda ov: "-".join(str(v) for v in ov.values()))
def test_combination(ov):
    if not expected_valid(ov):
        with pytest.raises(ValueError, match=r"decay\.(granularity|share)"):
            ModelConfig.from_preset("tiny", ov)
        return
    model = random_model(ov)
    ids = torch.randint(0, 256, (2, 9))

    # Forward and backward: finite values and gradients, one log decay <= 0 per linear layer.
    logits, log_decays = model(ids, return_decays=True)
    assert logits.shape == (2, 9, 256) and torch.isfinite(logits).all()
    assert len(log_decays) == (0 if model.cfg.mixer == "softmax" else model.cfg.n_layers)
    for ld in log_decays:
        assert ld.dtype == torch.float64 and torch.isfinite(ld).all() and (ld <= 0).all()
    logits.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    # Chunked prefill (5 tokens, then 2), then token-by-token decoding, against the parallel forward.
    with torch.no_grad():
        ref = model(ids)
        first, cache = model(ids[:, :5], use_cache=True)
        second, cache = model(ids[:, 5:7], cache=cache)
        steps = [first, second]
        for t in range(7, 9):
            out, cache = model(ids[:, t : t + 1], cache=cache)
            steps.append(out)
    assert cache.offset == 9
    assert_close("decoded logits", ref, torch.cat(steps, dim=1), 1e-10)
