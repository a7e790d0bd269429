"""Measured numbers are quoted once: README and the quick preset point to docs/sweeps.md instead of repeating them."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DURATION = re.compile(r"\d+(\.\d+)?\s*(min|minutes|s)\b|\d+:\d\d|\d+[–-]\d+ (CPU )?min")
ACCURACY = re.compile(r"\b0\.\d{3}\b")


def test_quick_study_numbers_live_only_in_docs_sweeps():
    readme = [line for line in (REPO / "README.md").read_text().splitlines() if "quick" in line.lower()]
    quick = (REPO / "decaylab/presets/sweeps/quick.toml").read_text()
    preset = [line for line in quick.splitlines() if line.startswith("#")]
    for line in readme + preset:
        assert not DURATION.search(line) and not ACCURACY.search(line), f"a measured number outside docs: {line!r}"
    assert "docs/sweeps.md" in "\n".join(readme) and "docs/sweeps.md" in "\n".join(preset)
    sweeps = (REPO / "docs/sweeps.md").read_text()
    measured = sweeps.split("### Measured `quick` run", 1)[1]
    assert re.match(r"\s*Measured on \d{4}-\d\d-\d\d", measured)  # the one quote, with its date
