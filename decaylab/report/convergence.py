"""Whether a study's runs had stopped improving when their training ended: a line under each study's table.

Why: a comparison of designs at a fixed budget is a comparison at that budget. Where most runs are still improving,
a reader must know that a longer budget may reorder them. The rule, the same for every study: a finished run with a
validation at or before 5/6 of its last validated step and one at that step is *still improving* if its validation
loss fell by more than MARGIN nats (1 % in perplexity) between the two. Runs with fewer validations are not checked.
"""

from __future__ import annotations

from decaylab.report.data import SweepData

MARGIN = 0.01  # nats
WINDOW = 1 / 6  # the last sixth of training


def still_improving(points: list[tuple[float, float]]) -> bool | None:
    """``points`` (step, validation loss) in step order; None when there are not two validations to compare."""
    if len(points) < 2:
        return None
    last_step, last = points[-1]
    earlier = [loss for step, loss in points[:-1] if step <= last_step * (1 - WINDOW)]
    if not earlier:
        return None
    return earlier[-1] - last > MARGIN


def training_end_line(data: SweepData, study: str) -> str | None:
    """The line for ``study``: how many of its finished runs were still improving; None without any to check."""
    curves = data.curves.get("val_loss", {})
    verdicts = [still_improving(sorted(curves.get(run_id, [])))
                for row in data.rows[study] for run_id, status in zip(row.run_ids, row.statuses)
                if status == "finished"]  # fmt: skip
    checked = [v for v in verdicts if v is not None]
    if not checked:
        return None
    unchecked = len(verdicts) - len(checked)
    return (f"End of training: {sum(checked)} of {len(checked)} runs still improving (validation loss more than "
            f"{MARGIN:g} nats lower at the last validation than at 5/6 of the steps)"
            + (f"; {unchecked} without two validations to compare" if unchecked else "") + ".")  # fmt: skip


__all__ = ["MARGIN", "still_improving", "training_end_line"]
