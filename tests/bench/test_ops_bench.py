"""decaylab bench ops --compare: side-by-side CPU timings written as JSON, and bad shapes refused."""

from __future__ import annotations

import json

import pytest

from decaylab.cli import main


def test_compare_loss_times_both_forms(tmp_path):
    out = tmp_path / "loss.json"
    assert main(["bench", "ops", "--compare", "loss", "--shapes", "96x16x700", "33x8x50", "--repeats", "1",
                 "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert [r["shape"] for r in rows] == ["N96·d16·V700", "N33·d8·V50"]
    for r in rows:
        assert r["reference_ms"] > 0 and r["chunked_ms"] > 0
        assert r["speedup"] == pytest.approx(r["reference_ms"] / r["chunked_ms"], abs=0.01)


def test_compare_loss_names_the_shape_it_wants(tmp_path, capsys):
    assert main(["bench", "ops", "--compare", "loss", "--shapes", "4x4", "--out", str(tmp_path / "x.json")]) != 0
    assert "tokens x d x vocab such as 1024x64x10000; got '4x4'" in capsys.readouterr().err
