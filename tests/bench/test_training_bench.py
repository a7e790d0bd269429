"""`decaylab bench training`: runs side by side and runs together, with the JSON they write (CPU, tiny runs)."""

from __future__ import annotations

import json

from decaylab.cli import main


def test_variants_side_by_side_and_runs_together(tmp_path, capsys):
    out = tmp_path / "side.json"
    assert main(["bench", "training", "--preset", "tiny", "--steps", "3", "--variants", "", "model.pos=rope",
                 "--cuda-graph", "off", "--json", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["(preset)", "model.pos=rope"]
    assert all(r["tokens_per_s"] > 0 and r["runs"][0]["final_loss"] > 0 for r in rows)

    together = tmp_path / "together.json"
    assert main(["bench", "training", "--preset", "tiny", "--steps", "3", "--together", "1", "2",
                 "--cuda-graph", "off", "--json", str(together)]) == 0  # fmt: skip
    rows = json.loads(together.read_text())["together"]
    assert [r["runs"] for r in rows] == [1, 2]
    assert len(rows[1]["final_losses"]) == 2 and rows[1]["final_losses"][0] == rows[0]["final_losses"][0]


def test_bad_arguments_are_refused(capsys):
    assert main(["bench", "training", "--preset", "tiny", "--steps", "0"]) == 2
    assert "--steps and --repeats must be >= 1" in capsys.readouterr().err
    assert main(["bench", "training", "--preset", "tiny", "--variants", "model.pos"]) == 2
    assert "must be KEY=VALUE" in capsys.readouterr().err
