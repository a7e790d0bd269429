"""Argument checks of the Triton backend that need no GPU (they run before any kernel launch)."""

from __future__ import annotations

import pytest
import torch

triton_backend = pytest.importorskip("decaylab.ops.triton", reason="triton is not installed")


def _inputs(B=1, T=8, H=2, K=16, V=16):
    return torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V), -torch.rand(B, T, H)


def test_registered_as_backend():
    from decaylab.ops import BACKENDS

    assert BACKENDS.get("triton") is triton_backend.triton_decay_linear_attention


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-tensor message")
def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend='chunk'"):
        triton_backend.triton_decay_linear_attention(*_inputs())


@pytest.mark.parametrize(
    "offsets, message",
    [([0, 3, 9], "end at T = 8"), ([1, 8], "start at 0"), ([0, 5, 3, 8], "never decrease")],
    ids=["wrong-total", "wrong-start", "decreasing"],
)
def test_bad_cu_seqlens_are_refused(offsets, message):
    with pytest.raises(ValueError, match=message):
        triton_backend.triton_decay_linear_attention(*_inputs(), cu_seqlens=torch.tensor(offsets))


def test_cu_seqlens_needs_batch_one_and_matching_states():
    with pytest.raises(ValueError, match="batch of one"):
        triton_backend.triton_decay_linear_attention(*_inputs(B=2), cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="N = 2 sequences"):
        triton_backend.triton_decay_linear_attention(
            *_inputs(), cu_seqlens=torch.tensor([0, 4, 8]), initial_state=torch.zeros(1, 2, 16, 16)
        )
    with pytest.raises(ValueError, match="int32 or int64"):
        triton_backend.triton_decay_linear_attention(*_inputs(), cu_seqlens=torch.tensor([0.0, 8.0]))


def test_hopper_dqk_is_refused_for_vector_decay():
    """The chunk-parallel backward takes vector decay, but not its Gluon dq/dk kernel (scalar decay only)."""
    from decaylab.ops.triton import LaunchConfig, use_config

    q, k, v, _ = _inputs()
    with use_config(LaunchConfig(16, 4, 1, chunk_parallel_backward=True, hopper_dqk=True)):
        with pytest.raises(ValueError, match="set hopper_dqk=False for vector decay"):
            triton_backend.triton_decay_linear_attention(q, k, v, -torch.rand(1, 8, 2, 16))


@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
def test_fused_dv_with_split_key_channels_is_refused(vector):
    from decaylab.ops.triton import LaunchConfig, use_config

    q, k, v, _ = _inputs()
    config = LaunchConfig(16, 4, 1, chunk_parallel_backward=True, fused_dv=True, bwd_key_block=16)
    log_decay = -torch.rand(1, 8, 2, 32) if vector else -torch.rand(1, 8, 2)
    with use_config(config), pytest.raises(ValueError, match="set bwd_key_block=0 or drop fused_dv"):
        triton_backend.triton_decay_linear_attention(torch.cat([q, q], -1), torch.cat([k, k], -1), v, log_decay)
