"""A group's start-up time, for ``together_process_s``: the process's age when the group began, or, in a sweep worker
that trained other groups before, the time since it took this one (Linux only; torch-free, so a sweep's driver and
workers can reset it without importing torch)."""

from __future__ import annotations

import os
import time
from pathlib import Path

_taken_at: float | None = None  # CLOCK_BOOTTIME when a reused worker took its latest group


def restart_clock() -> None:
    """A sweep worker that takes another group: its start-up counts from now, not from the process's start."""
    global _taken_at
    _taken_at = time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else None


def start_up_s() -> float | None:
    """Seconds since this process started or since it took its latest group (from /proc; None elsewhere)."""
    try:
        if _taken_at is not None:
            return time.clock_gettime(time.CLOCK_BOOTTIME) - _taken_at
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
