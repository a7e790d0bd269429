"""`decaylab bench kernels` sections: the listing and arguments on any machine; on a GPU, the accuracy section's
bounds and a short run of every other section (the ``gpu`` marker skips those without CUDA)."""

from __future__ import annotations

import json

import pytest
import torch

from decaylab.bench import kernel_sections, kernel_timing, kernels
from decaylab.bench.cli import BENCHMARKS
from decaylab.cli import main
from tests.commands.test_command_main import run_cli


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_bench_command_answers_help_without_torch(name):
    done = run_cli("bench", name, "--help", driver=True)
    assert done.returncode == 0, done.stderr
    assert f"usage: decaylab bench {name}" in done.stdout
    assert done.stdout.strip().endswith("imported: []")


def test_the_sections_are_listed_without_torch_or_a_gpu():
    done = run_cli("bench", "kernels", "--list-sections", driver=True)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()[:-1]]
    assert listed == list(kernels.SECTIONS)
    assert {"table", "accuracy", "profile", "host", "registers", "packed", "fallback", "model", "loss", "swiglu",
            "check-cost"} <= set(listed)
    assert done.stdout.strip().endswith("imported: []")


def test_every_section_describes_itself_and_its_default_shapes_parse():
    for name, section in kernels.SECTIONS.items():
        assert section.about and callable(section.run), name
        for text in section.shapes:
            kernel_timing.Shape.parse(text)


def test_bad_section_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "kernels", "--section", "profiles"])
    assert "invalid choice: 'profiles'" in capsys.readouterr().err
    assert main(["bench", "kernels", "--fla-max-configs", "0"]) == 2
    assert "--fla-max-configs must be >= 1" in capsys.readouterr().err
    assert main(["bench", "kernels", "--section", "profile", "--shapes", "4x4096x64"]) == 2
    assert "must be BxTxHxD" in capsys.readouterr().err


def test_the_accuracy_cases_cover_both_decays_packed_sequences_segments_and_fp16():
    cases = kernel_sections.ACCURACY_CASES
    assert {case[4] for case in cases} == {False, True}
    assert any(case[7] for case in cases) and any(case[8] for case in cases)
    assert {case[5] for case in cases} == {"bfloat16", "float16"}
    assert len({kernel_sections._label(case) for case in cases}) == len(cases)  # one row each in the printed table


def _request(decays=("scalar", "vector"), shapes=()):
    return kernel_timing.Request(tuple(kernel_timing.Shape.parse(s) for s in shapes), decays, (), (), False,
                                 torch.device("cuda"))


@pytest.mark.gpu
def test_accuracy_section_stays_within_the_bf16_bounds_on_gpu():
    """The pinned configs: every output and gradient within 5e-3 relative RMS of the fp64 recurrence (bf16 and
    fp16), and finite with log decays down to -1e3."""
    result = kernel_sections.accuracy(_request())
    assert len(result["cases"]) == len(kernel_sections.ACCURACY_CASES)
    for row in result["cases"]:
        for name, error in row["errors"].items():
            assert error < 5e-3, f"{row['case']}: {name} relative RMS error {error:.2e}"  # NaN fails too
    assert [row["finite"] for row in result["extreme"]] == [True, True]


@pytest.mark.gpu
def test_every_op_section_runs_at_a_small_shape_on_gpu(tmp_path):
    out = tmp_path / "kernels.json"
    assert main(["bench", "kernels", "--section", "table", "profile", "host", "registers", "fallback",
                 "--shapes", "1x256x2x64", "--configs", "", "split_below=0", "--cuda-graph",
                 "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["device"] == torch.cuda.get_device_name() and result["torch"] == torch.__version__
    assert len(result["rows"]) == 2 and all(row["decaylab[split_below=0]_fwd_bwd_graph_ms"] > 0
                                           for row in result["rows"])
    assert len(result["profile"]) == 4 and "Self CUDA" in result["profile"][0]["table"]
    assert all(row["fwd_bwd_host_us"] > 0 and row["graph_fwd_bwd_us"] > 0 for row in result["host"])
    assert result["registers"] and all(row["registers"] > 0 for row in result["registers"])
    assert result["fallback"][0]["halving_graph_ms"] > 0


@pytest.mark.gpu
def test_the_packed_and_model_sections_run_on_gpu(tmp_path):
    out = tmp_path / "kernels.json"
    assert main(["bench", "kernels", "--section", "packed", "model", "--decay", "scalar", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["config"] for row in result["packed"]] == ["pinned", "whole documents"]
    assert [row["backend"] for row in result["model"]] == ["triton"] and result["model"][0]["tokens_per_s"] > 0


@pytest.mark.gpu
def test_the_loss_swiglu_and_graphed_model_sections_run_on_gpu(tmp_path):
    out = tmp_path / "kernels.json"
    assert main(["bench", "kernels", "--section", "loss", "swiglu", "model", "--decay", "vector", "--cuda-graph",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["loss"] for row in result["loss"]] == ["plain", "fused"] * 2
    assert all(row["ms"] > 0 and row["peak_gb"] > 0 for row in result["loss"])
    assert [row["swiglu"] for row in result["swiglu"]] == ["torch", "kernels"] * 2
    assert result["model"][0]["graph"] and result["model"][0]["tokens_per_s"] > 0
