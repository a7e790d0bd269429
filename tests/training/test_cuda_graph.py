"""The CUDA-graph train step: refusals on CPU, checkpoint portability, and on a GPU the same curve as eager."""

from __future__ import annotations

import shutil

import pytest
import torch
from training_helpers import small_run

from decaylab.model import DecayLM, ModelConfig
from decaylab.run.config import TrainConfig
from decaylab.rundir import read_metrics
from decaylab.training.cuda_graph import graph_step_unsupported
from decaylab.training.distributed import load_optimizer_state
from decaylab.training.loop import TrainingDiverged, _use_cuda_graph, train
from decaylab.training.optim import build_optimizer, set_learning_rate


def _curve(run_dir):
    return [(r["step"], r["loss"], r["grad_norm"], r.get("val_loss")) for r in read_metrics(run_dir)]


def test_cuda_graph_on_a_cpu_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"train.cuda_graph=on needs a CUDA device.*auto or off"):
        TrainConfig(cuda_graph="on", device="cpu")
    with pytest.raises(ValueError, match=r"train.cuda_graph=on needs a CUDA device and no train.compile"):
        TrainConfig(cuda_graph="on", compile=True)


def test_why_a_step_cannot_be_captured():
    assert "CUDA device" in graph_step_unsupported(torch.device("cpu"), 1, False)
    assert "one process" in graph_step_unsupported(torch.device("cuda"), 2, False)
    assert "train.compile" in graph_step_unsupported(torch.device("cuda"), 1, True)
    assert graph_step_unsupported(torch.device("cuda"), 1, False) is None


def test_auto_stays_eager_on_a_cpu(tmp_path):
    from decaylab.training.distributed import DistContext

    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), initialized_here=False)
    assert not _use_cuda_graph(TrainConfig(cuda_graph="auto"), ctx)
    with pytest.raises(ValueError, match="cannot be used here: it needs a CUDA device"):
        _use_cuda_graph(TrainConfig(cuda_graph="on", device="auto"), ctx)


def test_a_graph_runs_checkpoint_resumes_on_an_eager_optimizer():
    """A graphed run saves a tensor learning rate and capturable=True; an optimizer elsewhere keeps its own."""
    model = DecayLM(ModelConfig.from_preset("tiny"))
    cfg = TrainConfig()
    graphed = build_optimizer(model, cfg)
    for group in graphed.param_groups:
        group["lr"], group["capturable"] = torch.tensor(0.5), True
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    eager = build_optimizer(model, cfg)
    load_optimizer_state(model, eager, graphed.state_dict(), ctx=None, fsdp=False)
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in eager.param_groups)
    set_learning_rate(eager, 0.25)
    eager.step()  # a tensor lr with capturable=True on CPU parameters would raise here
    assert all(g["lr"] == 0.25 for g in eager.param_groups)


def test_set_learning_rate_fills_a_tensor_in_place():
    optimizer = build_optimizer(DecayLM(ModelConfig.from_preset("tiny")), TrainConfig())
    lr = torch.tensor(1.0)
    for group in optimizer.param_groups:
        group["lr"] = lr
    set_learning_rate(optimizer, 0.125)
    assert all(g["lr"] is lr for g in optimizer.param_groups) and float(lr) == 0.125


# ---------------------------------------------------------------------------------------------------- on a GPU
GPU_RUN = {"train.device": "cuda", "model.dropout": 0.0, "train.max_steps": 12, "train.ckpt_every": 4,
           "train.keep_checkpoints": 4, "train.eval_every": 6}


@pytest.mark.gpu
@pytest.mark.parametrize("precision, rtol", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_graphed_run_follows_the_eager_curve(tmp_path, precision, rtol):
    eager = tmp_path / "eager"
    graphed = tmp_path / "graphed"
    train(small_run(**GPU_RUN, **{"train.precision": precision, "train.cuda_graph": "off"}), eager)
    summary = train(small_run(**GPU_RUN, **{"train.precision": precision, "train.cuda_graph": "on"}), graphed)
    a, b = _curve(eager), _curve(graphed)
    assert [r[0] for r in a] == [r[0] for r in b] and len(a) == 12
    for ra, rb in zip(a, b):
        torch.testing.assert_close(torch.tensor(rb[1:3]), torch.tensor(ra[1:3]), rtol=rtol, atol=0)
    assert summary["steps"] == 12 and summary["tokens_per_s"] > 0


@pytest.mark.gpu
def test_graphed_run_resumes_from_a_checkpoint(tmp_path):
    cfg = small_run(**GPU_RUN, **{"train.precision": "fp32", "train.cuda_graph": "on"})
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(cfg, straight)
    shutil.copytree(straight, killed)
    # As if killed after the step-4 checkpoint: later checkpoints, the final model and summary never written.
    for name in ("step-8", "step-12"):
        shutil.rmtree(killed / "checkpoints" / name)
    shutil.rmtree(killed / "model")
    (killed / "summary.json").unlink()
    summary = train(None, killed, resume=True)
    assert summary["resumed_from"] == 4
    for ra, rb in zip(_curve(straight), _curve(killed)):
        torch.testing.assert_close(torch.tensor(rb[1:3]), torch.tensor(ra[1:3]), rtol=1e-4, atol=0)


@pytest.mark.gpu
def test_graphed_run_stops_on_divergence(tmp_path):
    cfg = small_run(**{**GPU_RUN, "train.lr": 1e12, "train.warmup_steps": 0, "train.grad_clip": 0.0,
                       "train.cuda_graph": "on", "train.log_every": 2})  # fmt: skip
    with pytest.raises(TrainingDiverged, match="diverged at step"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()
