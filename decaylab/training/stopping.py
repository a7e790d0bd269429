"""Stopping training between two optimizer steps, with a checkpoint: ``with between_steps(): train(...)``.

Why: a signal's default ``KeyboardInterrupt`` lands wherever the step happens to be, so a run can only go back to its
last periodic checkpoint, and a sweep's runs (which write none: ``train.ckpt_every = 0`` in the GPU presets) start
over. Inside ``between_steps`` the first SIGINT or SIGTERM only asks to stop: the training loop sees the request
after the step in flight, writes a checkpoint of that step, and raises ``KeyboardInterrupt``
(``decaylab.training.loop``); resuming continues from there as from any checkpoint. The same signal again stops at
once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

_requested: int | None = None  # the signal that asked to stop


def requested() -> bool:
    """Whether a stop was asked for (the loop checks after every step)."""
    return _requested is not None


def _ask(signum: int, frame: object) -> None:
    # Only the same signal again stops at once: a Ctrl-C reaches a sweep's driver and its workers alike, and the
    # driver then sends each worker SIGTERM, which must not cut short the checkpoint the Ctrl-C asked for.
    global _requested
    if _requested == signum:
        raise KeyboardInterrupt(f"signal {signum} again: stopped at once")
    if _requested is not None:
        return
    _requested = signum
    print(f"signal {signum}: stopping after the step in flight, with a checkpoint (again to stop at once)",
          file=sys.stderr, flush=True)  # fmt: skip


@contextlib.contextmanager
def handling(signals: tuple[int, ...], handler) -> Iterator[bool]:
    """``handler`` for ``signals`` inside the block, the previous handlers restored after it. Python runs signal
    handlers in the main thread only, so elsewhere nothing is installed; the block gets whether they were."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield True
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def between_steps(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """``signals`` ask the training loop to stop after its step in flight (main thread only; elsewhere a no-op). A
    request that came too late to stop the loop (during its last step) still stops the caller: KeyboardInterrupt on
    leaving the block."""
    global _requested
    with handling(signals, _ask) as installed:
        if not installed:
            yield
            return
        _requested = None
        try:
            yield
        finally:
            stopped, _requested = _requested, None
    if stopped is not None:
        raise KeyboardInterrupt("stopped by a signal")


__all__ = ["between_steps", "handling", "requested"]
