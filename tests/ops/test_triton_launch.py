"""launch_kernel's binary cache without a GPU: a stand-in kernel records what the JIT and the binary are called with.

That the binary path computes what the JIT path does, bit for bit, is tested on a GPU (tests/ops/test_triton_gpu.py).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from decaylab.ops.triton import launch  # noqa: E402


class Binary:
    """A compiled kernel's stand-in: ``binary[grid](*args)`` records the launch."""

    function = object()

    def __init__(self, calls):
        self.calls = calls

    def __getitem__(self, grid):
        return lambda *args: self.calls.append(("binary", grid, args))


class Kernel:
    """A JIT kernel's stand-in over ``def kernel(x, y, n, FLAG, BLOCK=64)``: ``kernel[grid](...)`` records the launch
    and returns the binary, as Triton's JIT does."""

    def __init__(self):
        self.calls = []

        def kernel(x, y, n, FLAG, BLOCK=64):
            pass

        self.fn = kernel

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.calls.append(("jit", grid, args, kwargs))
            return Binary(self.calls)

        return run


@pytest.fixture
def cuda_present(monkeypatch):
    """Pretend CUDA is present: the stand-ins launch nothing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(launch, "ENABLED", True)
    monkeypatch.setattr(launch, "_binaries", {})


def _kinds(kernel):
    return [call[0] for call in kernel.calls]


def test_first_launch_through_the_jit_then_the_binary_with_every_parameter_in_order(cuda_present):
    kernel, x, y = Kernel(), torch.randn(8), torch.randn(8)
    launch.launch_kernel(kernel, (3,), x, y, 5, FLAG=True, num_warps=4)
    assert kernel.calls == [("jit", (3,), (x, y, 5), {"FLAG": True, "num_warps": 4})]
    launch.launch_kernel(kernel, (7, 2), x, y, 5, FLAG=True, num_warps=4)
    # the default BLOCK filled in, the launch option left out (it is in the binary)
    assert kernel.calls[1] == ("binary", (7, 2, 1), (x, y, 5, True, 64))


@pytest.mark.parametrize("change", ["int", "None", "dtype", "alignment", "constexpr", "bool", "option"])
def test_whatever_triton_specializes_on_takes_its_own_binary(cuda_present, change):
    kernel, x, y = Kernel(), torch.randn(8), torch.randn(8)
    base = dict(args=(x, y, 5), kwargs=dict(FLAG=True, num_warps=4))
    args, kwargs = base["args"], dict(base["kwargs"])
    if change == "int":
        args = (x, y, 16)
    elif change == "None":
        args = (x, None, 5)
    elif change == "dtype":
        args = (x, y.half(), 5)
    elif change == "alignment":  # one element in: 4 bytes past a 16-byte boundary
        args = (torch.randn(9)[1:], y, 5)
    elif change == "constexpr":
        kwargs["BLOCK"] = 128
    elif change == "bool":  # True and 1 are equal in Python; Triton types them apart
        kwargs["FLAG"] = 1
    else:
        kwargs["num_warps"] = 8
    launch.launch_kernel(kernel, (1,), *base["args"], **base["kwargs"])
    launch.launch_kernel(kernel, (1,), *args, **kwargs)
    launch.launch_kernel(kernel, (1,), *args, **kwargs)
    assert _kinds(kernel) == ["jit", "jit", "binary"]


def test_off_interpreted_or_unhashable_always_through_the_jit(cuda_present, monkeypatch):
    kernel, x = Kernel(), torch.randn(8)
    monkeypatch.setattr(launch, "ENABLED", False)
    for _ in range(2):
        launch.launch_kernel(kernel, (1,), x, x, 5, FLAG=True)
    monkeypatch.setattr(launch, "ENABLED", True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for _ in range(2):
        launch.launch_kernel(kernel, (1,), x, x, 5, FLAG=True)
    monkeypatch.delenv("TRITON_INTERPRET")
    for _ in range(2):
        launch.launch_kernel(kernel, (1,), x, x, [5], FLAG=True)  # a list cannot be a key
    assert _kinds(kernel) == ["jit"] * 6


def test_no_cuda_always_through_the_jit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launch, "_binaries", {})
    kernel, x = Kernel(), torch.randn(8)
    for _ in range(2):
        launch.launch_kernel(kernel, (1,), x, x, 5, FLAG=True)
    assert _kinds(kernel) == ["jit", "jit"]


def test_the_cache_stays_bounded_when_ints_vary(cuda_present, monkeypatch):
    monkeypatch.setattr(launch, "MAX_KEYS", 3)
    kernel, x = Kernel(), torch.randn(8)
    for n in range(10):
        launch.launch_kernel(kernel, (1,), x, x, n, FLAG=True)
        assert len(launch._binaries) <= 3
    launch.launch_kernel(kernel, (1,), x, x, 9, FLAG=True)  # the newest key is still there
    assert _kinds(kernel) == ["jit"] * 10 + ["binary"]
