"""Shared test helpers: per-dtype tolerances (relative RMS error) and a comparison that reports every tensor."""

from __future__ import annotations

import pytest
import torch

# Relative RMS error ||out - ref|| / ||ref|| allowed per dtype of the tested computation.
TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 2e-2,
}


def rel_rms_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return ((ref - out).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float, atol: float = 0.0) -> None:
    """Pass when the relative RMS error is below ``ratio`` (or max abs error <= atol); NaN never passes."""
    assert ref.shape == out.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    max_abs = (ref.double() - out.double()).abs().max().item() if ref.numel() else 0.0
    err = rel_rms_error(ref, out)
    assert err < ratio or max_abs <= atol, f"{name}: relative RMS error {err:.3e} >= {ratio:.1e} (max abs {max_abs:.3e})"


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny shapes run fastest so, and do not fight other test processes for the
    cores. Folders of tiny-shape tests make it autouse in their conftest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
