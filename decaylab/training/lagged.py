"""Metrics records of CUDA-graph steps, read back once their step has run, so that logging never stalls the host.

A graphed step leaves its loss and gradient norm on the GPU. Reading them at once (``float(loss)``) makes the host
wait for every step queued before it, and the GPU runs dry until the host queues the next one. For one run that
costs a drained queue per log line; for runs trained together (``decaylab.training.together``) every read stops
the host from queueing any run's steps, while the other runs' streams finish what they had. So each logged step's
two numbers, with the validation loss where the step was followed by one, are copied, in the order of the step's
stream, into pinned host memory behind an event; its record is written once the event has passed (``flush``), in
step order, and checked for divergence then. Where the loop waits anyway (a checkpoint, the last step), ``settle``
writes everything before it and reads the step's numbers at once.

A record's ``tokens_per_s`` is measured on the GPU's clock, between the events of two logged steps; the host's
time per step says little once it queues steps ahead of the GPU. The first record of a run keeps the host's figure.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Pending:
    record: dict[str, Any]
    values: torch.Tensor  # [2 + n]: loss, gradient norm, the record's tensor fields (pinned host memory on a GPU,
    # filled when ``event`` passes)
    event: Any  # torch.cuda.Event, or None on a CPU (the values are there already)


class LaggedRecords:
    """``add`` a logged step's record with its device loss and gradient norm; ``flush`` writes those whose step has
    run; ``settle`` waits for all, checks the current step and returns its numbers as floats.

    ``write(record)`` writes one finished record; ``check(step, loss, grad_norm, lr)`` raises on a diverged step
    (``step`` 0-based, as the trainer counts before its increment).
    """

    def __init__(self, write: Callable[[dict[str, Any]], None], check: Callable[[int, float, float, float], None]):
        self._write, self._check = write, check
        self._pending: deque[_Pending] = deque()
        self._last: tuple[Any, int] | None = None  # (event, tokens) of the newest record written

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, record: dict[str, Any], loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Other fields of ``record`` that are device tensors (a validation loss) are read with the step's numbers."""
        # A copy now, in stream order: the next replay overwrites the graph's loss and gradient norm in place.
        extra = [key for key, value in record.items() if torch.is_tensor(value)]
        values = torch.stack([loss.detach().double(), grad_norm.detach().double(),
                              *(record[key].detach().double() for key in extra)])
        event = None
        if values.is_cuda:
            host = torch.empty(len(values), dtype=torch.float64, pin_memory=True)
            values = host.copy_(values, non_blocking=True)
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self._pending.append(_Pending(record, values, event))

    def flush(self, wait: bool = False) -> None:
        """Write the records whose step has run (all of them with ``wait``), oldest first."""
        while self._pending and (wait or self._pending[0].event is None or self._pending[0].event.query()):
            item = self._pending.popleft()
            if item.event is not None:
                item.event.synchronize()  # returns at once unless waiting
            loss, grad_norm, *extra = item.values.tolist()
            record = item.record
            for key, value in zip([k for k, v in record.items() if torch.is_tensor(v)], extra):
                record[key] = value if math.isfinite(value) else None
                if key == "val_loss":
                    record["val_ppl"] = math.exp(min(value, 700.0)) if math.isfinite(value) else None
            try:
                self._check(record["step"] - 1, loss, grad_norm, record["lr"])
            except Exception:
                self._pending.clear()  # nothing after a diverged step is written
                raise
            record.update(loss=loss, grad_norm=grad_norm)
            self._emit(record, item.event)

    def settle(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> tuple[float, float, Any]:
        """Write every pending record, then read this step's numbers (waiting for it) and check them. Returns the
        floats and an event marking the step, for ``write_now``."""
        self.flush(wait=True)
        event = None
        if loss.is_cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        values = (float(loss), float(grad_norm))
        self._check(step, *values, lr)
        return (*values, event)

    def write_now(self, record: dict[str, Any], event: Any) -> None:
        """Write a record whose numbers ``settle`` read (its ``event``), after the pending ones."""
        self.flush(wait=True)
        self._emit(record, event)

    def _emit(self, record: dict[str, Any], event: Any) -> None:
        if event is not None:
            if self._last is not None:
                previous, tokens = self._last
                seconds = previous.elapsed_time(event) / 1000.0
                record["tokens_per_s"] = round((record["tokens"] - tokens) / max(seconds, 1e-9), 1)
            self._last = (event, record["tokens"])
        self._write(record)


__all__ = ["LaggedRecords"]
