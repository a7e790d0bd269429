"""Bad inputs are refused with a ValueError that names the offending tensor (and the fix)."""

from __future__ import annotations

import pytest
import torch

from decaylab.ops import decay_linear_attention

B, T, H, K, V = 2, 5, 3, 4, 6


def _good():
    return dict(
        q=torch.randn(B, T, H, K),
        k=torch.randn(B, T, H, K),
        v=torch.randn(B, T, H, V),
        log_decay=-torch.rand(B, T, H),
    )


def _call(backend="chunk", initial_state=None, **overrides):
    args = {**_good(), **overrides}
    return decay_linear_attention(
        args["q"], args["k"], args["v"], args["log_decay"], initial_state=initial_state, backend=backend
    )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(q=torch.randn(B, T, H * K)), "q must be"),
        (dict(k=torch.randn(B, T, H, K + 1)), "k must be"),
        (dict(v=torch.randn(B, T + 1, H, V)), "v must be"),
        (dict(v=torch.randn(B, T, H)), "v must be"),
        (dict(log_decay=-torch.rand(B, T)), "log_decay must be"),
        (dict(log_decay=-torch.rand(B, T, H, K + 1)), "log_decay must be"),
        (dict(q=torch.randint(0, 3, (B, T, H, K))), "q has dtype"),
        (dict(log_decay=-torch.ones(B, T, H, dtype=torch.int64)), "log_decay has dtype"),
        (dict(v=torch.randn(B, T, H, V, dtype=torch.float64)), "share one dtype"),
        (dict(k=[[0.0]]), "k must be a torch.Tensor"),
        (dict(log_decay=torch.full((B, T, H), 0.1)), "log_decay has positive values"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
@pytest.mark.parametrize("backend", ["recurrent", "parallel", "chunk"])
def test_bad_tensor_is_named(backend, overrides, message):
    with pytest.raises(ValueError, match=message):
        _call(backend, **overrides)


def test_positive_log_decay_error_names_the_fix():
    with pytest.raises(ValueError, match="clamp"):
        _call(log_decay=torch.full((B, T, H), 0.5))


@pytest.mark.parametrize("name", ["k", "v", "log_decay"])
def test_tensor_on_another_device_is_named(name):
    # The meta device stands in for a second device on a CPU-only machine.
    moved = _good()[name].to("meta")
    with pytest.raises(ValueError, match=f"{name} is on meta"):
        _call(**{name: moved})


@pytest.mark.parametrize(
    "state,message",
    [
        (torch.zeros(B, H, K, V + 1), "initial_state must be"),
        (torch.zeros(B, H, V, K), "initial_state must be"),
        (torch.zeros(B, H, K, V, dtype=torch.bfloat16), "initial_state must be float32"),
        (torch.zeros(B, H, K, V, device="meta"), "initial_state is on meta"),
    ],
    ids=["wrong-V", "transposed", "bf16", "device"],
)
def test_bad_initial_state_is_named(state, message):
    with pytest.raises(ValueError, match=message):
        _call(initial_state=state)


def test_unknown_backend_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'chunk'"):
        _call(backend="chunks")


def test_value_check_can_be_skipped():
    """check_decay=False skips only the log_decay <= 0 check (a GPU sync), and the op runs unchanged."""
    args = {**_good(), "log_decay": torch.full((B, T, H), 0.1)}
    o, _ = decay_linear_attention(*args.values(), backend="recurrent", check_decay=False)
    from decaylab.ops.reference.recurrent import recurrent_decay_linear_attention

    ref, _ = recurrent_decay_linear_attention(*args.values())
    assert torch.equal(o, ref)
    with pytest.raises(ValueError, match="k must be"):  # the shape checks still run
        decay_linear_attention(args["q"], args["k"][..., :-1], args["v"], args["log_decay"], check_decay=False)
