"""A three-way switch for a fast path that runs on CUDA by default: ``DeviceSwitch``.

The fused ops (positional encodings, norms) and the stacked projections each take their fast path on CUDA tensors
and the torch code elsewhere, and tests and benchmarks force one side within a context: ``forced(False)`` runs the
torch code everywhere, ``forced(True)`` the fast path wherever it can run (CPU tensors too, e.g. Triton kernels
under ``TRITON_INTERPRET=1``), ``forced(None)`` the default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class DeviceSwitch:
    def __init__(self) -> None:
        self.mode: bool | None = None  # None: on CUDA tensors; True: everywhere; False: nowhere

    @contextlib.contextmanager
    def forced(self, enabled: bool | None) -> Iterator[None]:
        """Within the context the switch is ``enabled``; the previous mode comes back after it."""
        previous, self.mode = self.mode, enabled
        try:
            yield
        finally:
            self.mode = previous

    def on(self, device: torch.device) -> bool:
        """Whether the fast path is on for tensors on ``device``."""
        return device.type == "cuda" if self.mode is None else self.mode


__all__ = ["DeviceSwitch"]
