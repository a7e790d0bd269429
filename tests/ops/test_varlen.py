"""Packed variable-length sequences (cu_seqlens): one packed call equals separate calls, for every backend."""

from __future__ import annotations

import pytest
import torch

from decaylab.ops import decay_linear_attention, varlen
from tests.conftest import TOLERANCE, assert_close
from tests.ops.helpers import make_inputs

# Lengths around the chunk size, with empty sequences first, in the middle and last.
LENGTHS = [0, 5, 70, 0, 1, 64, 0]
H, K, V = 2, 5, 4


def _leaves(vector, initial_state, seed=0):
    T = sum(LENGTHS)
    q, k, v, ld, _ = make_inputs(1, T, H, K, V, vector=vector, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    h0 = torch.randn(len(LENGTHS), H, K, V, generator=g, dtype=torch.float64) if initial_state else None
    tensors = {"q": q, "k": k, "v": v, "log_decay": ld, "initial_state": h0}
    return {name: t.clone().requires_grad_() for name, t in tensors.items() if t is not None}


def _backward(o, final, seed=3):
    g = torch.Generator().manual_seed(seed)
    d_o = torch.randn(tuple(o.shape), generator=g, dtype=torch.float64)
    d_final = torch.randn(tuple(final.shape), generator=g, dtype=torch.float64)
    ((o * d_o).sum() + (final * d_final).sum()).backward()


@pytest.mark.parametrize("decay", ["scalar", "vector"])
@pytest.mark.parametrize("h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("backend", ["recurrent", "parallel", "chunk", "auto"])
def test_packed_equals_separate_calls(backend, decay, h0):
    packed, separate = _leaves(decay == "vector", h0), _leaves(decay == "vector", h0)
    cu_seqlens = torch.tensor([0, *LENGTHS]).cumsum(0)
    o, final = decay_linear_attention(
        packed["q"], packed["k"], packed["v"], packed["log_decay"], scale=0.8,
        initial_state=packed.get("initial_state"), output_final_state=True, backend=backend, cu_seqlens=cu_seqlens,
    )
    assert o.shape == (1, sum(LENGTHS), H, V) and final.shape == (len(LENGTHS), H, K, V)
    _backward(o, final)

    outputs, finals = [], []
    for n, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        part = slice(start, end)
        h = separate["initial_state"][n : n + 1] if h0 else None
        o_n, final_n = decay_linear_attention(
            separate["q"][:, part], separate["k"][:, part], separate["v"][:, part], separate["log_decay"][:, part],
            scale=0.8, initial_state=h, output_final_state=True, backend="recurrent",
        )
        outputs.append(o_n)
        finals.append(final_n)
    o_ref, final_ref = torch.cat(outputs, dim=1), torch.cat(finals)
    _backward(o_ref, final_ref)

    tol = TOLERANCE[torch.float64]
    assert_close("o", o_ref, o, tol)
    assert_close("final_state", final_ref, final, tol)
    for name in packed:
        assert_close(f"d{name}", separate[name].grad, packed[name].grad, tol, atol=1e-12)
    if not h0:  # an empty sequence without initial state ends in zeros
        assert torch.equal(final[0], torch.zeros(H, K, V, dtype=final.dtype))


def test_empty_sequence_hands_its_initial_state_back():
    leaves = _leaves(True, True)
    cu_seqlens = torch.tensor([0, *LENGTHS]).cumsum(0)
    _, final = decay_linear_attention(*(leaves[n] for n in ("q", "k", "v", "log_decay")),
                                      initial_state=leaves["initial_state"], output_final_state=True,
                                      cu_seqlens=cu_seqlens)
    for n, length in enumerate(LENGTHS):
        if length == 0:
            assert torch.equal(final[n], leaves["initial_state"][n])


def _call(cu_seqlens, B=1, T=10, initial_state=None):
    q, k, v, ld, _ = make_inputs(B, T, H, K, V, vector=False)
    return decay_linear_attention(q, k, v, ld, cu_seqlens=cu_seqlens, initial_state=initial_state)


@pytest.mark.parametrize(
    "cu_seqlens,message",
    [
        (torch.tensor([[0, 10]]), "1-D integer tensor"),
        (torch.tensor([10]), "1-D integer tensor"),
        ([0, 10], "1-D integer tensor"),
        (torch.tensor([0.0, 10.0]), "int32 or int64"),
        (torch.tensor([1, 10]), "start at 0"),
        (torch.tensor([0, 6, 4, 10]), "never decrease"),
        (torch.tensor([0, 4, 9]), "end at T = 10"),
    ],
    ids=["2d", "one-offset", "list", "float", "not-from-0", "decreasing", "short"],
)
def test_bad_cu_seqlens_is_refused(cu_seqlens, message):
    with pytest.raises(ValueError, match=message):
        _call(cu_seqlens)


def test_cu_seqlens_needs_a_batch_of_one():
    with pytest.raises(ValueError, match="batch of one"):
        _call(torch.tensor([0, 4, 10]), B=2)


def test_initial_state_needs_one_row_per_sequence():
    with pytest.raises(ValueError, match=r"initial_state must be \[N, H, K, V\] = \(2, 2, 5, 4\)"):
        _call(torch.tensor([0, 4, 10]), initial_state=torch.zeros(1, H, K, V, dtype=torch.float64))


def test_cu_seqlens_int32_is_accepted():
    o32, _ = _call(torch.tensor([0, 4, 10], dtype=torch.int32))
    o64, _ = _call(torch.tensor([0, 4, 10]))
    assert torch.equal(o32, o64)


@pytest.fixture
def offset_reads(monkeypatch):
    """Counts reads of tensors to the host (`tolist`), the device sync the offsets memo exists to avoid."""
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t) or tolist(t))
    monkeypatch.setattr(varlen, "_RECENT_OFFSETS", [])
    return reads


def test_offsets_are_read_once_for_repeated_calls(offset_reads):
    """Every layer of a packed batch passes the same cu_seqlens: one host read for all of them."""
    cu = torch.tensor([0, 4, 10])
    first, _ = _call(cu)
    for _ in range(3):
        again, _ = _call(cu)
        assert torch.equal(again, first)
    assert sum(t is cu for t in offset_reads) == 1
    _call(torch.tensor([0, 4, 10]))  # an equal but different tensor is read afresh
    assert len([t for t in offset_reads if t.numel() == 3]) == 2


def test_offsets_written_in_place_are_read_and_checked_again(offset_reads):
    cu = torch.tensor([0, 4, 10])
    _call(cu)
    cu[1] = 7
    q = torch.zeros(1, 10, H, K)
    assert varlen.check_cu_seqlens(cu, q) == [0, 7, 10]
    cu[1] = 11
    with pytest.raises(ValueError, match="never decrease"):
        varlen.check_cu_seqlens(cu, q)
    cu[1] = 4
    with pytest.raises(ValueError, match="end at T = 12"):  # the same tensor against another T is checked again
        varlen.check_cu_seqlens(cu, torch.zeros(1, 12, H, K))
