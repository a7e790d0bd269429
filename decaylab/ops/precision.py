"""Every torch backend computes in float32 (float64 for float64 inputs), also under ``torch.autocast``.

Autocast would run the backends' matrix products in bfloat16 or float16 while their elementwise decay arithmetic
stays in float32: the outputs lose about a digit (relative error 2-3e-3 instead of 1.6e-3 for bfloat16 inputs)
and in-place products of mixed dtypes fail. So each backend turns autocast off for its device while it runs;
the output still comes back in the input dtype.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def autocast_off(device: torch.device):
    """A context that disables autocast on ``device`` while it is on (a no-op otherwise)."""
    try:
        enabled = torch.is_autocast_enabled(device.type)
    except RuntimeError:  # a device type autocast does not know (e.g. meta) has none to disable
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False) if enabled else contextlib.nullcontext()


def full_precision(fn):
    """Decorate a backend ``fn(q, ...)`` to run with autocast off on q's device."""

    @functools.wraps(fn)
    def wrapper(q, *args, **kwargs):
        with autocast_off(q.device):
            return fn(q, *args, **kwargs)

    return wrapper
