"""End to end: `decaylab eval` on real run directories, checked against independent computations."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from eval_run_helpers import assemble_run, text_data

from decaylab.cli import main
from decaylab.config import load_json, with_overrides
from decaylab.data import DataConfig, build_dataset, mqar_accuracy
from decaylab.evaluation import decay_statistics, evaluate
from decaylab.model import DecayLM, ModelConfig
from decaylab.run.config import RunConfig
from decaylab.training.loop import validation_loss

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _eval(capsys, *argv):
    rc = main(["eval", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def _dataset(run_dir):
    return build_dataset(load_json(RunConfig, run_dir / "config.json").data, run_dir)


def test_eval_writes_every_metric(run_copy, capsys):
    rc, out, err = _eval(capsys, run_copy)
    assert rc == 0, err
    result = json.loads((run_copy / "eval.json").read_text())
    assert "test  loss" in out and "extrapolation ppl" in out and str(run_copy / "eval.json") in out
    assert (run_copy / "decay_median.png").read_bytes()[:8] == PNG_MAGIC

    # validation loss: the trainer's own validation routine on the same final model, whole split
    cfg = load_json(RunConfig, run_copy / "config.json")
    data = _dataset(run_copy)
    model = DecayLM.from_pretrained(run_copy / "model")
    trainer_val_loss = validation_loss(model, data, cfg, torch.device("cpu"), max_batches=None)
    assert result["val_loss"] == pytest.approx(trainer_val_loss, rel=1e-5)
    assert result["val_ppl"] == pytest.approx(math.exp(result["val_loss"]))
    for split, key in (("valid", "val"), ("test", "test")):
        assert result[f"{key}_tokens"] == len(data.split(split)) - 1
        expected_bpb = result[f"{key}_loss"] / math.log(2) * len(data.split(split)) / data.bytes_in_split(split)
        assert result[f"{key}_bpb"] == pytest.approx(expected_bpb)

    assert result["extrapolation_context"] == {"1": 32, "2": 64, "4": 128, "8": 256}
    assert result["extrapolation"]["1"] == pytest.approx(result["test_ppl"])
    assert all(v > 1 for v in result["extrapolation"].values())
    assert result["loss_by_position_context"] == 256
    assert [p[0] for p in result["loss_by_position"]] == list(range(0, 256, 4))

    assert [s["layer"] for s in result["decay_stats"]] == [1, 2, "all"]
    assert result["decay_tokens"] == min(2048, len(data.split("valid")))
    direct = decay_statistics(model, torch.from_numpy(data.split("valid")[:2048].astype(np.int64)))
    assert [s["median"] for s in result["decay_stats"]] == pytest.approx([s["median"] for s in direct], rel=1e-6)


def test_unfinished_run_needs_the_checkpoint_flag(run_copy, capsys):
    shutil.rmtree(run_copy / "model")
    (run_copy / "summary.json").unlink()
    rc, _, err = _eval(capsys, run_copy)
    assert rc == 2 and "--checkpoint latest" in err and "step 3" in err
    assert not (run_copy / "eval.json").exists()
    rc, out, err = _eval(capsys, run_copy, "--checkpoint", "latest", "--extrapolation", "none", "--splits", "valid")
    assert rc == 0, err
    result = json.loads((run_copy / "eval-step-3.json").read_text())
    assert result["model_source"] == "checkpoints/step-3" and result["step"] == 3
    assert "extrapolation" not in result and not (run_copy / "eval.json").exists()
    assert (run_copy / "decay_median-step-3.png").exists()


def test_checkpoint_eval_keeps_the_final_eval(run_copy, capsys):
    quick = dict(splits=("valid",), extrapolation=(), decay_tokens=64, device="cpu")
    final = evaluate(run_copy, **quick)
    before = (run_copy / "eval.json").read_text()
    step3 = evaluate(run_copy, checkpoint="step-3", **quick)
    step2 = evaluate(run_copy, checkpoint="step-2", **quick)
    assert (run_copy / "eval.json").read_text() == before
    assert step3["val_loss"] == pytest.approx(final["val_loss"], rel=1e-6)  # step 3 is the final step
    assert step2["val_loss"] != pytest.approx(final["val_loss"], rel=1e-6)  # one optimizer step earlier


def test_missing_or_empty_run_dirs(tmp_path, capsys):
    rc, _, err = _eval(capsys, tmp_path / "nope")
    assert rc == 2 and "does not exist" in err
    rc, _, err = _eval(capsys, tmp_path)
    assert rc == 2 and "no config.json" in err


def test_run_without_model_says_train_first(run_copy, capsys):
    shutil.rmtree(run_copy / "model")
    shutil.rmtree(run_copy / "checkpoints")
    rc, _, err = _eval(capsys, run_copy)
    assert rc == 2 and "train it first" in err


def test_corrupt_model_and_checkpoint(run_copy, capsys):
    weights = run_copy / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    rc, _, err = _eval(capsys, run_copy)
    assert rc == 2 and "model.safetensors" in err and "corrupt" in err
    assert "--checkpoint latest" in err and "save the model again" not in err
    model_pt = run_copy / "checkpoints" / "step-3" / "model.pt"
    model_pt.write_bytes(b"garbage" + model_pt.read_bytes()[7:])
    rc, _, err = _eval(capsys, run_copy, "--checkpoint", "step-3")
    assert rc == 2 and "step-3" in err and "corrupt" in err
    assert not (run_copy / "eval.json").exists()


def test_decay_text_file(run_copy, tmp_path):
    text = tmp_path / "decay.txt"
    text.write_text("the cat sat on a mat " * 40)
    result = evaluate(run_copy, splits=("valid",), extrapolation=(), decay_text=text, decay_tokens=50, device="cpu")
    assert result["decay_text"] == str(text) and result["decay_tokens"] == 50
    assert result["decay_stats"][-1]["count"] == 50 * 2 * 16 * 2  # tokens x heads x key channels x layers
    with pytest.raises(FileNotFoundError, match="decay text file"):
        evaluate(run_copy, decay_text=tmp_path / "missing.txt")


def test_softmax_run_has_no_decay_stats(tmp_path, capsys):
    cfg = RunConfig(model=ModelConfig.from_preset("tiny", {"mixer": "softmax"}), data=text_data(tmp_path))
    assemble_run(tmp_path / "softmax", with_overrides(cfg, {"train.seq_len": 32}))
    rc, out, err = _eval(capsys, tmp_path / "softmax", "--extrapolation", "1,2")
    assert rc == 0, err
    result = json.loads((tmp_path / "softmax" / "eval.json").read_text())
    assert result["decay_stats"] == [] and "decay_plot" not in result and "no decay" in out
    assert not (tmp_path / "softmax" / "decay_median.png").exists()
    assert set(result["extrapolation"]) == {"1", "2"}


def test_mqar_run_reports_recall_accuracy(tmp_path):
    data = DataConfig(corpus="mqar", vocab_size=64, mqar_num_kv_pairs=4, mqar_eval_examples=20)
    cfg = RunConfig(model=ModelConfig.from_preset("tiny", {"vocab_size": 64}), data=data)
    cfg = assemble_run(tmp_path / "mqar", with_overrides(cfg, {"train.seq_len": 32}))
    result = evaluate(tmp_path / "mqar", device="cpu")
    assert "test_ppl" not in result and "extrapolation" not in result
    model = DecayLM.from_pretrained(tmp_path / "mqar" / "model").eval()
    batches = list(build_dataset(data).eval_batches("test", 32, 20))
    with torch.no_grad():
        expected = mqar_accuracy(torch.cat([model(x) for x, _ in batches]), torch.cat([y for _, y in batches]))
    assert result["mqar_accuracy"] == pytest.approx(expected)
    # the whole valid split's loss at the query positions, as eval.json's val_loss of a language model
    x, y = (torch.cat(t) for t in zip(*build_dataset(data).eval_batches("valid", 32, 20)))
    with torch.no_grad():
        val_loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
    assert result["val_loss"] == pytest.approx(float(val_loss), rel=1e-5)
    assert result["val_ppl"] == pytest.approx(math.exp(result["val_loss"]))
    assert result["mqar_queries"] == 20 * 4 and [s["layer"] for s in result["decay_stats"]] == [1, 2, "all"]


def test_bad_flags(run_copy, capsys):
    with pytest.raises(SystemExit):
        main(["eval", str(run_copy), "--extrapolation", "1,x"])
    with pytest.raises(SystemExit):
        main(["eval", str(run_copy), "--splits", "train"])
    rc, _, err = _eval(capsys, run_copy, "--checkpoint", "step-7")
    assert rc == 2 and "step-2, step-3" in err


def test_bf16_precision_scores_close_to_fp32(run_copy, capsys):
    rc, _, err = _eval(capsys, run_copy, "--extrapolation", "1,2")
    assert rc == 0, err
    exact = json.loads((run_copy / "eval.json").read_text())
    rc, _, err = _eval(capsys, run_copy, "--extrapolation", "1,2", "--precision", "bf16")
    assert rc == 0, err
    result = json.loads((run_copy / "eval.json").read_text())
    assert (exact["eval_precision"], result["eval_precision"]) == ("fp32", "bf16")
    for key in ("val_loss", "test_loss"):
        assert result[key] != exact[key]  # autocast reached the model's matmuls ...
        assert result[key] == pytest.approx(exact[key], rel=2e-2)  # ... and moved the loss by bf16 rounding only
    assert result["extrapolation"]["2"] == pytest.approx(exact["extrapolation"]["2"], rel=5e-2)
    assert result["decay_stats"] == exact["decay_stats"]  # always fp32


def test_auto_precision_is_fp32_on_a_cpu(run_copy, capsys):
    rc, _, err = _eval(capsys, run_copy, "--extrapolation", "1,2", "--device", "cpu")
    assert rc == 0, err
    exact = json.loads((run_copy / "eval.json").read_text())
    rc, _, err = _eval(capsys, run_copy, "--extrapolation", "1,2", "--device", "cpu", "--precision", "auto")
    assert rc == 0, err
    auto = json.loads((run_copy / "eval.json").read_text())
    assert auto["eval_precision"] == "fp32"  # the precision used, recorded
    assert (auto["val_loss"], auto["test_loss"]) == (exact["val_loss"], exact["test_loss"])


@pytest.mark.gpu
def test_auto_precision_is_bf16_on_a_gpu(run_copy):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    exact = evaluate(run_copy, extrapolation=(1,), device="cuda", precision="fp32")
    auto = evaluate(run_copy, extrapolation=(1,), device="cuda", precision="auto")
    assert auto["eval_precision"] == "bf16"
    assert auto["val_loss"] != exact["val_loss"] and auto["val_loss"] == pytest.approx(exact["val_loss"], rel=2e-2)


def test_unknown_precision_is_refused(run_copy):
    with pytest.raises(ValueError, match="choose from fp32, bf16"):
        evaluate(run_copy, precision="fp16")
