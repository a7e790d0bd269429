"""The readable chunked algorithm (decaylab.ops.reference.chunked) against the token-by-token recurrence."""

from __future__ import annotations

import pytest
import torch

from helpers import make_inputs, run

from decaylab.ops.reference.chunked import chunked_decay_linear_attention
from decaylab.ops.reference.recurrent import recurrent_decay_linear_attention

SHAPES = [  # (B, T, H, K, V, chunk): T not a multiple of the chunk, K != V, one chunk, a chunk of one token
    (2, 37, 2, 8, 5, 16),
    (1, 64, 3, 4, 6, 64),
    (2, 9, 1, 3, 3, 1),
]


@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
@pytest.mark.parametrize("B, T, H, K, V, chunk", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["fp64", "fp32"])
def test_forward_and_every_gradient_match_the_recurrence(B, T, H, K, V, chunk, vector, dtype, tol):
    inputs = make_inputs(B, T, H, K, V, vector=vector, dtype=dtype, initial_state=True, seed=T + K)
    want = run(recurrent_decay_linear_attention, *inputs, scale=0.7)
    got = run(lambda *a, **kw: chunked_decay_linear_attention(*a, **kw, chunk_size=chunk), *inputs, scale=0.7)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
def test_extreme_decays_stay_finite(vector):
    B, T, H, K, V = 1, 40, 2, 4, 4
    shape = (B, T, H, K) if vector else (B, T, H)
    log_decay = -torch.rand(shape, dtype=torch.float64) * 1e3  # down to exp(-1000): forgets everything
    inputs = make_inputs(B, T, H, K, V, vector=vector, log_decay=log_decay, initial_state=True)
    want = run(recurrent_decay_linear_attention, *inputs)
    got = run(lambda *a, **kw: chunked_decay_linear_attention(*a, **kw, chunk_size=16), *inputs)
    for name in want:
        assert torch.isfinite(got[name]).all(), name
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-9, msg=name)
