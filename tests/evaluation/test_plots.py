"""The median-decay figure: a real PNG with one line per method, atomic, clear errors."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from decaylab.evaluation.plots import plot_median_decay

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(medians):
    out = [
        {"layer": i, "median": m, "p25": m - 0.05, "p75": min(m + 0.05, 1.0)} for i, m in enumerate(medians, start=1)
    ]
    return out + [{"layer": "all", "median": sum(medians) / len(medians), "p25": 0.0, "p75": 1.0}]


def test_plot_writes_png_with_one_line_per_method(tmp_path, monkeypatch):
    drawn = {}
    real_plot = plt.Axes.plot

    def spy(self, x, y, *args, **kwargs):
        drawn[kwargs.get("label")] = (list(x), list(y))
        return real_plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(plt.Axes, "plot", spy)
    path = plot_median_decay(
        {"SD-0.99": _stats([0.9, 0.95, 0.99]), "GLA": _stats([0.5, 0.7, 0.8]), "softmax": []}, tmp_path / "d.png"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert drawn == {"SD-0.99": ([1, 2, 3], [0.9, 0.95, 0.99]), "GLA": ([1, 2, 3], [0.5, 0.7, 0.8])}
    assert [p.name for p in tmp_path.iterdir()] == ["d.png"]  # no temporary file left behind


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="no decay statistics"):
        plot_median_decay({"softmax": []}, tmp_path / "d.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_median_decay({"a": _stats([0.9])}, tmp_path / "missing" / "d.png")
