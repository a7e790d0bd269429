"""Records of graphed steps written once their step has run: order, divergence, settling, the GPU's clock."""

from __future__ import annotations

import math

import pytest
import torch

from decaylab.training.lagged import LaggedRecords


class _Sink:
    def __init__(self):
        self.written, self.checked = [], []

    def write(self, record):
        self.written.append(dict(record))

    def check(self, step, loss, grad_norm, lr):
        self.checked.append(step)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise FloatingPointError(f"step {step + 1}")


def _record(step, tokens_per_s=100.0):
    return {"step": step, "tokens": step * 10, "lr": 0.1, "tokens_per_s": tokens_per_s}


def _values(step, device="cpu"):
    return torch.tensor(1.0 / step, device=device), torch.tensor(float(step), device=device)


def test_records_are_written_in_step_order_with_their_numbers():
    sink = _Sink()
    records = LaggedRecords(sink.write, sink.check)
    for step in (20, 40, 60):
        records.add(_record(step), *_values(step))
    records.flush()
    assert [r["step"] for r in sink.written] == [20, 40, 60] and len(records) == 0
    assert [r["loss"] for r in sink.written] == pytest.approx([1 / 20, 1 / 40, 1 / 60])
    assert [r["grad_norm"] for r in sink.written] == [20.0, 40.0, 60.0]
    assert sink.checked == [19, 39, 59]  # 0-based, as the trainer counts before its increment
    assert all(r["tokens_per_s"] == 100.0 for r in sink.written)  # a CPU keeps the host's figure


def test_a_validation_loss_on_the_device_is_read_with_its_step():
    sink = _Sink()
    records = LaggedRecords(sink.write, sink.check)
    records.add({**_record(20), "val_loss": torch.tensor(2.5, dtype=torch.float64)}, *_values(20))
    records.add({**_record(40), "val_loss": torch.tensor(float("nan"), dtype=torch.float64)}, *_values(40))
    records.flush()
    first, second = sink.written
    assert first["val_loss"] == 2.5 and first["val_ppl"] == pytest.approx(math.exp(2.5))
    assert first["loss"] == pytest.approx(1 / 20) and first["grad_norm"] == 20.0
    assert second["val_loss"] is None and second["val_ppl"] is None  # nothing scored: written as null, not NaN


def test_the_values_are_copied_when_added():
    sink = _Sink()
    records = LaggedRecords(sink.write, sink.check)
    loss, grad_norm = _values(5)
    records.add(_record(5), loss, grad_norm)
    loss.fill_(7.0)  # a graph's next replay overwrites its outputs in place
    records.flush()
    assert sink.written[0]["loss"] == pytest.approx(0.2)


def test_divergence_is_raised_at_its_record_after_the_earlier_ones():
    sink = _Sink()
    records = LaggedRecords(sink.write, sink.check)
    records.add(_record(1), *_values(1))
    records.add(_record(2), torch.tensor(float("nan")), torch.tensor(1.0))
    records.add(_record(3), *_values(3))
    with pytest.raises(FloatingPointError, match="step 2"):
        records.flush()
    records.flush(wait=True)  # as the trainer does on its way out
    assert [r["step"] for r in sink.written] == [1] and len(records) == 0


def test_settle_writes_what_is_pending_then_reads_the_step():
    sink = _Sink()
    records = LaggedRecords(sink.write, sink.check)
    records.add(_record(10), *_values(10))
    loss, grad_norm, event = records.settle(19, *_values(20), lr=0.1)
    assert (loss, grad_norm) == (pytest.approx(0.05), 20.0) and event is None
    assert [r["step"] for r in sink.written] == [10] and sink.checked == [9, 19]
    records.write_now(dict(_record(20), loss=loss, grad_norm=grad_norm, val_loss=3.0), event)
    assert [r["step"] for r in sink.written] == [10, 20] and sink.written[-1]["val_loss"] == 3.0
    with pytest.raises(FloatingPointError):
        records.settle(29, torch.tensor(float("inf")), torch.tensor(1.0), lr=0.1)


@pytest.mark.gpu
def test_on_a_gpu_records_wait_for_their_step_and_rates_come_from_its_clock():
    sink = _Sink()
    records = LaggedRecords(sink.write, sink.check)
    a = torch.randn(4096, 4096, device="cuda")
    for step in (1, 2, 3):
        for _ in range(20):  # some milliseconds of GPU work per logged step
            a = torch.tanh(a @ a * 1e-3)
        loss = a.float().mean()
        records.add(_record(step, tokens_per_s=-1.0), loss, loss.abs())
        expected = float(loss)
    records.flush(wait=True)
    assert [r["step"] for r in sink.written] == [1, 2, 3]
    assert sink.written[-1]["loss"] == pytest.approx(expected)
    assert sink.written[0]["tokens_per_s"] == -1.0  # the first keeps the host's figure
    assert all(r["tokens_per_s"] > 0 for r in sink.written[1:])  # 10 tokens over the GPU time between events
