"""decaylab bench decode: a row per mixer, batch and context, with its step time, written as JSON."""

from __future__ import annotations

import json

from decaylab.cli import main


def test_decode_rows_for_every_mixer_batch_and_context(tmp_path):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--preset", "tiny", "--contexts", "8", "19", "--batch", "1", "2", "--steps", "2",
                 "--prefill-chunk", "8", "--set", "decay.kind=gla", "--json", str(out)]) == 0  # fmt: skip
    data = json.loads(out.read_text())
    assert data["config"]["overrides"] == {"decay.kind": "gla"} and data["config"]["device"] == "cpu"
    rows = data["rows"]
    assert [(r["mixer"], r["batch"], r["context"]) for r in rows] == [
        (m, b, c) for m in ("linear", "softmax") for b in (1, 2) for c in (8, 19)]
    for r in rows:
        assert r["ms_per_step"] > 0 and r["prefill_s"] > 0 and r["peak_gib"] is None
        assert abs(r["tokens_per_s"] - r["batch"] / (r["ms_per_step"] / 1e3)) / r["tokens_per_s"] < 0.01


def test_bad_arguments_are_named(capsys):
    assert main(["bench", "decode", "--preset", "tiny", "--contexts", "0"]) != 0
    assert "--contexts, --batch, --steps and --prefill-chunk must be positive" in capsys.readouterr().err
