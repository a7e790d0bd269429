"""The short convolution against its definition as a sum over the last W tokens, forward and gradients, and run
piece by piece from its cache; its configuration is checked."""

from __future__ import annotations

import pytest
import torch

from decaylab import DecayLM
from decaylab.layers import ShortConv
from decaylab.model import ModelConfig
from tests.conftest import assert_close


def reference(x: torch.Tensor, weight: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """y_t[c] = sum_i w[c, i] x_{t - W + 1 + i}[c], with the state's W - 1 inputs before the first token."""
    W = weight.shape[-1]
    seq = torch.cat([state, x], dim=1)
    return torch.stack([(seq[:, t : t + W] * weight[:, 0].T).sum(1) for t in range(x.shape[1])], dim=1)


@pytest.mark.parametrize("T", [1, 2, 7])  # shorter than the state, and longer
@pytest.mark.parametrize("width", [2, 4])
def test_matches_its_definition_forward_and_gradients(T, width):
    torch.manual_seed(T * 10 + width)
    conv = ShortConv(5, width).double()
    x = torch.randn(3, T, 5, dtype=torch.float64, requires_grad=True)
    state = torch.randn(3, width - 1, 5, dtype=torch.float64, requires_grad=True)
    y, new_state = conv(x, state)
    ref = reference(x, conv.weight, state)
    assert_close("y", ref, y, 1e-12)
    assert torch.equal(new_state, torch.cat([state, x], dim=1)[:, -(width - 1):])
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, state, conv.weight), dy)
    want = torch.autograd.grad(ref, (x, state, conv.weight), dy)
    for name, g, w in zip(("dx", "dstate", "dweight"), got, want):
        assert_close(name, w, g, 1e-12)


def test_without_a_state_the_past_is_zero():
    conv = ShortConv(4, 3).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    y, _ = conv(x)
    assert_close("y", reference(x, conv.weight, torch.zeros(2, 2, 4, dtype=torch.float64)), y, 1e-12)


def test_pieces_from_the_cache_give_the_whole_sequence():
    conv = ShortConv(6, 4).double()
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    whole, _ = conv(x)
    state, pieces = None, []
    for part in x.split([5, 1, 2, 3], dim=1):
        y, state = conv(part, state)
        pieces.append(y)
    assert_close("pieces", whole, torch.cat(pieces, dim=1), 1e-12)


def test_init_is_the_depthwise_conv1d_default_range():
    torch.manual_seed(0)
    weight = ShortConv(512, 4).weight
    assert weight.abs().max() <= 0.5 and weight.abs().max() > 0.45 and weight.std() > 0.2


@pytest.mark.parametrize("overrides,match", [
    ({"short_conv": 1}, "0 \\(no convolution\\) or a width of 2 or more"),
    ({"short_conv": -2}, "0 \\(no convolution\\) or a width of 2 or more"),
    ({"short_conv": 4, "mixer": "softmax"}, "linear mixer only; set short_conv=0"),
])  # fmt: skip
def test_bad_widths_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_preset("tiny", overrides)


@pytest.mark.parametrize("share", [False, True])
def test_the_model_convolves_q_k_v_and_only_with_a_width(share):
    ov = {"decay.kind": "gla", "decay.share": share}
    plain = DecayLM(ModelConfig.from_preset("tiny", ov))
    assert not any("short_conv" in name for name, _ in plain.named_parameters())
    conv = DecayLM(ModelConfig.from_preset("tiny", {**ov, "short_conv": 4}))
    shapes = {name: p.shape for name, p in conv.named_parameters() if "short_conv" in name}
    d = conv.cfg.d_model
    assert shapes == {f"blocks.{i}.mixer.short_conv.weight": (d * (2 if share else 3), 1, 4) for i in range(2)}
