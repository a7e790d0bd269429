"""Positional encodings: rotary against complex multiplication, relativity with tied decays, LRPE and TPE."""

from __future__ import annotations

import pytest
import torch

from decaylab.layers import CosineEncoding, RotaryEncoding, TemporalPositionEncoding
from tests.conftest import assert_close


def test_rope_is_complex_rotation_of_half_pairs():
    torch.manual_seed(0)
    K, offset = 8, 3
    rope = RotaryEncoding(K)
    x = torch.randn(2, 5, 3, K, dtype=torch.float64)
    out, _ = rope(x, x, offset)
    t = torch.arange(offset, offset + 5, dtype=torch.float64)[:, None, None]
    theta = 10000.0 ** (-torch.arange(0, K, 2, dtype=torch.float64) / K)
    z = torch.complex(x[..., : K // 2], x[..., K // 2 :]) * torch.exp(1j * t * theta)
    assert_close("rope", torch.cat([z.real, z.imag], -1), out, 1e-12)


def test_lrpe_scores_are_cosines_of_relative_position():
    torch.manual_seed(1)
    K = 6
    lrpe = CosineEncoding(K)
    q, k = torch.randn(1, 4, 1, K, dtype=torch.float64), torch.randn(1, 4, 1, K, dtype=torch.float64)
    qe, ke = lrpe(q, k, offset=10)
    assert qe.shape[-1] == 2 * K
    theta = torch.zeros(K, dtype=torch.float64)
    theta[: K // 2] = 10000.0 ** (-2 * torch.arange(K // 2, dtype=torch.float64) / K)
    for t in range(4):
        for s in range(4):
            want = (q[0, t, 0] * k[0, s, 0] * torch.cos((t - s) * theta)).sum()
            assert torch.allclose((qe[0, t, 0] * ke[0, s, 0]).sum(), want, atol=1e-12)


def test_tpe_matches_its_recurrence_and_continues_with_state():
    torch.manual_seed(2)
    d, H = 8, 2
    tpe = TemporalPositionEncoding(d, H).double()
    with torch.no_grad():
        tpe.query.normal_()
        tpe.key.normal_()
        tpe.decay_logit.normal_()
    x = torch.randn(2, 6, d, dtype=torch.float64)
    y, _ = tpe(x)
    lam = torch.sigmoid(tpe.decay_logit)  # [H]
    coef = (tpe.query.view(H, -1) * tpe.key.view(H, -1)).sum(-1)
    xs = x.view(2, 6, H, d // H)
    o = torch.zeros_like(xs)
    for t in range(6):
        for s in range(t + 1):
            o[:, t] += (coef * lam ** (t - s))[:, None] * xs[:, s]
    ref = tpe.o_proj(tpe.norm(o.reshape(2, 6, d)))
    assert_close("tpe", ref, y, 1e-12)
    y1, state = tpe(x[:, :4], output_state=True)
    y2, _ = tpe(x[:, 4:], state=state)
    assert_close("tpe pieces", y, torch.cat([y1, y2], 1), 1e-12)


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head dimension"):
        RotaryEncoding(7)
