"""CPU time of calls measured side by side: interleaved rounds, so that a shared machine's load falls on all alike."""

from __future__ import annotations

import time


def best_cpu_seconds(calls: dict, repeats: int) -> dict:
    """Best CPU time per call over ``repeats`` rounds that run every call once, in turn (interleaved)."""
    best = dict.fromkeys(calls, float("inf"))
    for fn in calls.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    return best
