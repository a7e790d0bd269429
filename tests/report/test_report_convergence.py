"""The end-of-training line under each study's table (decaylab.report.convergence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from decaylab.report.convergence import MARGIN, still_improving, training_end_line
from decaylab.report.data import load_sweep
from decaylab.sweep.archive import import_results

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "points, expected",
    [
        ([(500, 4.0), (1000, 3.5), (3000, 3.2)], True),  # fell 0.3 nats since step 2,500 or before
        ([(500, 4.0), (2500, 3.205), (3000, 3.2)], False),  # 0.005 nats: flat
        ([(500, 4.0), (2500, 3.2 + MARGIN), (3000, 3.2)], False),  # exactly the margin is not more than it
        ([(500, 5.55), (2500, 5.55), (3000, 5.56)], False),  # rising or flat at chance
        ([(3000, 3.2)], None),  # one validation
        ([(2900, 3.5), (3000, 3.2)], None),  # nothing at or before 5/6 of the steps
    ],
)
def test_still_improving(points, expected):
    assert still_improving(points) is expected


def test_lines_of_the_committed_decay_range_study(tmp_path):
    import_results(REPO / "docs" / "results" / "decay-range.jsonl", tmp_path / "results.sqlite")
    data = load_sweep(tmp_path)
    lines = {study: training_end_line(data, study) for study, _ in data.studies}
    assert lines["lm-128"].startswith("End of training: 33 of 33 runs still improving")
    # MQAR: most runs at a plateau, solved or flat at chance; a few leaving chance late (docs/results.md, "Limits")
    assert lines["mqar-256-16"].startswith("End of training: 2 of 33 runs still improving")
    assert lines["mqar-512-16"].startswith("End of training: 6 of 33 runs still improving")
