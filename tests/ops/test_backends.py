"""Every backend agrees with the token-by-token recurrence in fp64: outputs, final state, every gradient."""

from __future__ import annotations

import pytest
import torch

from decaylab.ops import BACKENDS
from decaylab.ops.chunk import DEFAULT_CHUNK_SIZE, chunk_decay_linear_attention
from tests.conftest import TOLERANCE, assert_close
from tests.ops.helpers import make_inputs, run

C = DEFAULT_CHUNK_SIZE
# (B, T, H, K, V): T around the chunk size and a few hundred; K != V; odd head dims.
SHAPES = [(2, 1, 2, 7, 5), (1, C - 1, 2, 7, 5), (2, C, 1, 33, 8), (1, C + 1, 2, 5, 7), (1, 300, 2, 8, 6)]
FAST_BACKENDS = ["parallel", "chunk"]
# Absolute floor for gradients that are exactly zero in the recurrence (one token and no initial state: the
# log decay multiplies nothing), where the chunked identity q*dq - k*dk cancels only to rounding.
ATOL = 1e-12


def _id(shape):
    return "B{}-T{}-H{}-K{}-V{}".format(*shape)


# The quadratic oracle is checked on short sequences only (its memory is T^2 K).
CASES = [(backend, shape) for backend in FAST_BACKENDS for shape in SHAPES if backend != "parallel" or shape[1] <= 2 * C]


@pytest.mark.parametrize("backend,shape", CASES, ids=[f"{b}-{_id(s)}" for b, s in CASES])
@pytest.mark.parametrize("decay", ["scalar", "vector"])
@pytest.mark.parametrize("h0", [False, True], ids=["no_h0", "h0"])
def test_matches_recurrent_fp64(backend, shape, decay, h0):
    inputs = make_inputs(*shape, vector=decay == "vector", initial_state=h0)
    ref = run("recurrent", *inputs, scale=0.7)
    out = run(backend, *inputs, scale=0.7)
    assert set(ref) == set(out)
    for name in ref:
        assert_close(f"{backend}/{name}", ref[name], out[name], TOLERANCE[torch.float64], atol=ATOL)


@pytest.mark.parametrize("chunk_size", [1, 2, 8, 32, 128])
@pytest.mark.parametrize("decay", ["scalar", "vector"])
def test_chunk_sizes(decay, chunk_size):
    inputs = make_inputs(1, 77, 2, 6, 3, vector=decay == "vector", initial_state=True)
    ref = run("recurrent", *inputs)
    out = run(chunk_decay_linear_attention, *inputs, chunk_size=chunk_size)
    for name in ref:
        assert_close(f"C{chunk_size}/{name}", ref[name], out[name], TOLERANCE[torch.float64])


def test_vector_decay_with_one_key_channel_matches_recurrent():
    # K = 1: a vector decay has the scalar's layout [B, T, H, 1] but must keep its own shape in the gradient.
    inputs = make_inputs(1, 70, 2, 1, 4, vector=True, initial_state=True)
    ref, out = run("recurrent", *inputs), run("chunk", *inputs)
    assert out["dlog_decay"].shape == inputs[3].shape
    for name in ref:
        assert_close(name, ref[name], out[name], TOLERANCE[torch.float64])


def test_no_final_state_unless_asked():
    q, k, v, ld, _ = make_inputs(1, 10, 1, 4, 4, vector=False)
    for backend in BACKENDS.names():
        if backend == "triton":
            continue
        o, final = BACKENDS.get(backend)(q, k, v, ld)
        assert final is None and o.shape == (1, 10, 1, 4) and o.dtype == q.dtype


@pytest.mark.parametrize("backend", ["recurrent", *FAST_BACKENDS])
def test_output_dtype_and_final_state_dtype(backend):
    q, k, v, ld, _ = make_inputs(1, 9, 2, 4, 3, vector=True, dtype=torch.bfloat16)
    o, final = BACKENDS.get(backend)(q, k, v, ld.float(), output_final_state=True)
    assert o.dtype == torch.bfloat16 and final.dtype == torch.float32


def test_chunk_rejects_bad_chunk_size():
    q, k, v, ld, _ = make_inputs(1, 9, 1, 4, 4, vector=True)
    for bad in (0, 3, 48):
        with pytest.raises(ValueError, match="chunk_size"):
            chunk_decay_linear_attention(q, k, v, ld, chunk_size=bad)


@pytest.mark.parametrize("backend", ["recurrent", *FAST_BACKENDS])
def test_empty_sequence_returns_initial_state(backend):
    q, k, v, ld, h0 = make_inputs(2, 0, 2, 4, 3, vector=True, initial_state=True)
    o, final = BACKENDS.get(backend)(q, k, v, ld, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 2, 3)
    assert torch.equal(final, h0)
