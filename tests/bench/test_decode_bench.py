"""decaylab bench decode: a row per mixer, batch and context, with its step time, written as JSON."""

from __future__ import annotations

import json

import pytest

from decaylab.cli import main


def test_decode_rows_for_every_mixer_batch_and_context(tmp_path):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--preset", "tiny", "--contexts", "8", "19", "--batch", "1", "2", "--steps", "2",
                 "--prefill-chunk", "8", "--set", "decay.kind=gla", "--json", str(out)]) == 0  # fmt: skip
    data = json.loads(out.read_text())
    assert data["config"]["overrides"] == {"decay.kind": "gla"} and data["config"]["device"] == "cpu"
    rows = data["rows"]
    assert [(r["mixer"], r["batch"], r["context"], r["cuda_graph"]) for r in rows] == [
        (m, b, c, False) for m in ("linear", "softmax") for b in (1, 2) for c in (8, 19)]  # a CPU: eager steps only
    for r in rows:
        assert r["ms_per_step"] > 0 and r["prefill_s"] > 0 and r["peak_gib"] is None
        assert abs(r["tokens_per_s"] - r["batch"] / (r["ms_per_step"] / 1e3)) / r["tokens_per_s"] < 0.01


def test_bad_arguments_are_named(capsys):
    assert main(["bench", "decode", "--preset", "tiny", "--contexts", "0"]) != 0
    assert "--contexts, --batch, --steps and --prefill-chunk must be positive" in capsys.readouterr().err
    assert main(["bench", "decode", "--preset", "tiny", "--device", "cpu", "--cuda-graph", "both"]) != 0
    assert "--cuda-graph both needs a CUDA device (this run is on cpu)" in capsys.readouterr().err


@pytest.mark.gpu
def test_eager_and_graphed_rows_side_by_side_on_a_gpu(tmp_path):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--preset", "tiny", "--contexts", "37", "--batch", "1", "3", "--steps", "4",
                 "--set", "d_model=128", "--set", "n_heads=2", "--json", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mixer"], r["batch"], r["cuda_graph"]) for r in rows] == [
        (m, b, g) for m in ("linear", "softmax") for b in (1, 3) for g in (False, True)]
    for r in rows:
        assert r["ms_per_step"] > 0 and r["peak_gib"] > 0
        assert ("speedup" in r) == r["cuda_graph"]
