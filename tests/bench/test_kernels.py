"""``decaylab bench kernels`` without a GPU: shapes, floors, config overrides, the table, and the refusal."""

from __future__ import annotations

import argparse

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

from decaylab.bench import kernels as kb  # noqa: E402


def test_shapes_parse_and_refuse_bad_text():
    assert kb.Shape.parse("4x4096x64x128") == kb.Shape(4, 4096, 64, 128)
    with pytest.raises(ValueError, match="BxTxHxD"):
        kb.Shape.parse("4x4096x64")


def test_floor_matches_the_documented_h200_figures():
    # docs/benchmarks.md: copy 4246 GB/s -> vector floors 0.379 ms fwd and 1.075 ms fwd+bwd at B4 T4096 H64 D128
    shape = kb.Shape(4, 4096, 64, 128)
    assert kb.floor_bytes(shape, vector=True, backward=False) / 4246e9 * 1e3 == pytest.approx(0.379, abs=1e-3)
    assert kb.floor_bytes(shape, vector=True, backward=True) / 4246e9 * 1e3 == pytest.approx(1.075, abs=1e-3)
    # scalar decay moves one gate value per token-head instead of D
    assert kb.floor_bytes(shape, False, False) < kb.floor_bytes(shape, True, False)


def test_config_specs_are_typed_and_checked():
    assert kb.parse_config_spec("chunk=32,bwd_num_warps=8,precise_intra=true") == dict(
        chunk=32, bwd_num_warps=8, precise_intra=True
    )
    assert kb.parse_config_spec("") == {}
    with pytest.raises(ValueError, match="key one of"):
        kb.parse_config_spec("chunks=32")
    with pytest.raises(ValueError, match="integer"):
        kb.parse_config_spec("chunk=big")
    with pytest.raises(ValueError, match="true or false"):
        kb.parse_config_spec("precise_intra=maybe")
    with pytest.raises(ValueError, match="power of two"):
        kb.check_config_spec("chunk=24")
    # an option of the scalar-only chunk-parallel backward is checked only against the decays timed
    kb.check_config_spec("spans_per_program=2", ("scalar",))
    with pytest.raises(ValueError, match="set chunk_parallel_backward=True as well"):
        kb.check_config_spec("spans_per_program=2", ("vector",))
    # ... and against the head dims timed: only D128's pinned scalar plan computes dv in the reverse sweep
    kb.check_config_spec("dv_sweep_num_warps=8", ("scalar",), (128,))
    with pytest.raises(ValueError, match="set dv_in_sweep=True as well"):
        kb.check_config_spec("dv_sweep_num_warps=8", ("scalar",), (64, 128))


def test_a_programs_per_sm_override_refits_the_segment_thresholds(monkeypatch):
    """The picked config's split_below / target_programs were set for its own programs_per_sm and split_percent: a
    column that overrides either gets them re-fitted to the GPU's SMs, unless it sets them itself."""
    from types import SimpleNamespace

    from decaylab.ops.triton import configs

    seen = []
    monkeypatch.setattr(kb, "time_provider", lambda name, inputs, graph=False: seen.append(
        configs.active_config(torch.device("cpu"), True, 128, 128)) or {})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(multi_processor_count=132))
    device = torch.device("cpu")
    kb._time_column("decaylab[programs_per_sm=3]", {}, device, True, 128, graph=False)
    kb._time_column("decaylab[programs_per_sm=3,target_programs=10]", {}, device, True, 128, graph=False)
    kb._time_column("decaylab[chunk=32]", {}, device, True, 128, graph=False)
    kb._time_column("decaylab[split_percent=50]", {}, device, True, 128, graph=False)
    refit, explicit, untouched, half = (plan.splitting for plan in seen)
    assert (refit.split_below, refit.target_programs) == (132, 396)
    assert explicit.target_programs == 10
    assert (half.split_below, half.target_programs) == (66, 264)
    pinned = configs.pick_config(device, True, 128, 128).splitting
    assert (untouched.split_below, untouched.target_programs) == (pinned.split_below, pinned.target_programs)


def test_table_reports_the_first_decaylab_column_against_fla():
    row = {"shape": "B1·T64·H1·D16", "decay": "vector", "floor_fwd_ms": 0.5, "floor_fwd_bwd_ms": 1.0}
    for column, fwd, both in (("decaylab[chunk=32]", 1.0, 4.0), ("decaylab", 2.0, 5.0), ("fla", 3.0, 6.0)):
        row.update({f"{column}_fwd_ms": fwd, f"{column}_fwd_bwd_ms": both})
    table = kb.format_table({"rows": [row]}, ["decaylab[chunk=32]", "decaylab", "fla"])
    lines = table.splitlines()
    assert "speedup vs fla" in lines[0]
    assert lines[2].endswith("| 3.00× |") and lines[3].endswith("| 1.50× |")


def test_table_adds_the_cuda_graph_rows_when_timed():
    row = {"shape": "B1·T64·H1·D16", "decay": "scalar", "floor_fwd_ms": 0.5, "floor_fwd_bwd_ms": 1.0,
           "floor_fwd_bwd_graph_ms": 1.0}
    for column, times in (("decaylab", (1.0, 4.0, 2.0)), ("fla", (3.0, 6.0, 5.0))):
        row.update(dict(zip((f"{column}_fwd_ms", f"{column}_fwd_bwd_ms", f"{column}_fwd_bwd_graph_ms"), times)))
    lines = kb.format_table({"rows": [row]}, ["decaylab", "fla"]).splitlines()
    assert len(lines) == 5 and "| fwd+bwd, CUDA graph | 1.000 | 2.000 | 2.0× | 5.000 | 5.0× | 2.50× |" in lines[4]
    del row["floor_fwd_bwd_graph_ms"]  # not timed: no such row
    assert len(kb.format_table({"rows": [row]}, ["decaylab", "fla"]).splitlines()) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_without_a_gpu_the_command_says_so():
    parser = argparse.ArgumentParser()
    kb.configure(parser)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        kb.run(parser.parse_args([]))
    with pytest.raises(ValueError, match="key one of"):
        kb.run(parser.parse_args(["--configs", "warps=8"]))


def test_the_chunk_provider_is_the_torch_chunked_backend():
    """``--compare chunk`` times decaylab's torch chunked backend (the kernels' fallback): same output as the op."""
    from decaylab.ops import decay_linear_attention

    inputs = kb.make_inputs(kb.Shape.parse("1x40x2x16"), True, torch.device("cpu"), dtype=torch.float32)
    fn = kb.PROVIDERS["chunk"](dict(inputs))
    expected, _ = decay_linear_attention(inputs["q"], inputs["k"], inputs["v"], inputs["log_decay"], scale=1.0,
                                         backend="recurrent")
    torch.testing.assert_close(fn(inputs["q"], inputs["k"], inputs["v"], inputs["log_decay"]), expected)
