"""A signal during training stops it after the step in flight, with a checkpoint of that step, and the resumed run
is the uninterrupted one (decaylab.training.stopping)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_helpers import curve, small_run

from decaylab.rundir import list_checkpoints, read_metrics
from decaylab.training import loop, stopping, together
from decaylab.training.loop import train
from decaylab.training.together import train_together

REPO = Path(__file__).resolve().parents[2]
NO_CHECKPOINTS = {"train.ckpt_every": 0, "train.keep_checkpoints": 1}  # as the GPU sweep presets train



def _signal_at_call(monkeypatch, call: int, signum: int) -> None:
    """Send ``signum`` to this process from inside the ``call``-th loss computation: in the middle of a step."""
    calls = []
    original = loop._token_loss

    def loss_then_signal(model, x, y):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return original(model, x, y)

    monkeypatch.setattr(loop, "_token_loss", loss_then_signal)


def test_a_signal_stops_after_the_step_with_a_checkpoint_and_the_run_resumes_exactly(tmp_path, monkeypatch):
    cfg = small_run(**NO_CHECKPOINTS)
    straight = train(cfg, tmp_path / "straight")
    _signal_at_call(monkeypatch, 6, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="stopped at step"), stopping.between_steps():
        train(cfg, tmp_path / "stopped")
    monkeypatch.undo()
    done = [r["step"] for r in read_metrics(tmp_path / "stopped")]
    assert 1 < done[-1] < cfg.train.max_steps and done == list(range(1, done[-1] + 1))
    assert [s for s, _ in list_checkpoints(tmp_path / "stopped")] == [done[-1]]  # the step in flight, finished
    assert not (tmp_path / "stopped" / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored
    resumed = train(None, tmp_path / "stopped", resume=True)
    assert resumed["resumed_from"] == done[-1] and resumed["final_loss"] == straight["final_loss"]
    assert curve(tmp_path / "stopped") == curve(tmp_path / "straight")  # exactly, dropout included


def test_the_same_signal_again_stops_at_once_another_does_not():
    with pytest.raises(KeyboardInterrupt, match="stopped by a signal"), stopping.between_steps():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a worker's SIGTERM from its driver after the Ctrl-C: no effect
        assert stopping.requested()
    assert not stopping.requested()
    with pytest.raises(KeyboardInterrupt, match="again: stopped at once"), stopping.between_steps():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs between bytecodes: the sleep is interrupted, never finished
        pytest.fail("the second Ctrl-C did not stop")


def test_runs_trained_together_all_checkpoint_their_own_step(tmp_path, monkeypatch):
    configs = [small_run(**NO_CHECKPOINTS, **{"train.seed": seed}) for seed in (1, 2, 3)]
    for i, cfg in enumerate(configs):
        train(cfg, tmp_path / f"alone-{i}")
    _signal_at_call(monkeypatch, 8, signal.SIGTERM)  # during the third round's second run
    with pytest.raises(KeyboardInterrupt), stopping.between_steps():
        train_together([(cfg, tmp_path / f"run-{i}", False) for i, cfg in enumerate(configs)])
    monkeypatch.undo()
    steps = [[s for s, _ in list_checkpoints(tmp_path / f"run-{i}")] for i in range(3)]
    assert all(len(s) == 1 and 1 < s[0] < 8 for s in steps), steps
    results = train_together([(cfg, tmp_path / f"run-{i}", True) for i, cfg in enumerate(configs)])
    assert [r["resumed_from"] for r in results] == [s[0] for s in steps]
    for i in range(3):
        assert curve(tmp_path / f"run-{i}") == curve(tmp_path / f"alone-{i}")


def test_ctrl_c_in_decaylab_train_keeps_a_checkpoint_and_names_the_resume_command(tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--set", "data.corpus=mqar", "--set", "data.vocab_size=64", "--set",
            "train.max_steps=100000", "--set", "train.ckpt_every=0", "--set", "train.eval_every=0", "--set",
            "train.log_every=1", "--set", "train.progress=false", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "decaylab", "train", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"continue with: decaylab train --resume --out {out}" in err
    (step, _), = list_checkpoints(out)
    assert step == read_metrics(out)[-1]["step"] >= 3


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("replicas", [1, 3])
def test_runs_stacked_or_graphed_stop_with_checkpoints_and_resume(tmp_path, monkeypatch, device, replicas):
    """Seeds stacked as replicas of one model (decaylab.training.replicas), and on a GPU the step replayed from a CUDA
    graph: the stop reads the last step's numbers back before its checkpoint, every replica checkpoints its own
    state, and the resumed runs follow the uninterrupted ones."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    graph = {"train.cuda_graph": "on"} if device == "cuda" else {}
    configs = [small_run(**NO_CHECKPOINTS, **graph, **{"train.device": device, "train.seed": seed,
                                                       "train.precision": "fp32", "model.dropout": 0.0,
                                                       "train.max_steps": 12, "train.eval_every": 0})
               for seed in (1, 2, 3)]  # fmt: skip
    for i, cfg in enumerate(configs):
        train(cfg, tmp_path / f"alone-{i}")
    checks, stacks = [], []
    monkeypatch.setattr(stopping, "requested", lambda: checks.append(1) or len(checks) >= 10)  # in the fifth round

    class Recorded(together.SeedReplicas):
        def __init__(self, trainers):
            stacks.append(len(trainers))
            super().__init__(trainers)

    monkeypatch.setattr(together, "SeedReplicas", Recorded)
    with pytest.raises(KeyboardInterrupt):
        train_together([(cfg, tmp_path / f"run-{i}", False) for i, cfg in enumerate(configs)], replicas=replicas)
    monkeypatch.undo()
    assert stacks == ([3] if replicas == 3 else [])
    for i, cfg in enumerate(configs):
        (step, _), = list_checkpoints(tmp_path / f"run-{i}")
        assert step == 4 and step == read_metrics(tmp_path / f"run-{i}")[-1]["step"]
        train(cfg, tmp_path / f"run-{i}", resume=True)
        got = torch.tensor([r["loss"] for r in read_metrics(tmp_path / f"run-{i}")])
        want = torch.tensor([r["loss"] for r in read_metrics(tmp_path / f"alone-{i}")])
        torch.testing.assert_close(got, want, rtol=1e-3, atol=0)  # stacked and alone round apart
