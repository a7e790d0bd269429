"""Data-parallel training (DDP and FSDP2): 2 CPU processes on gloo follow the single-process loss curve."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from training_helpers import small_run

from decaylab.rundir import read_metrics
from decaylab.training.loop import train

TESTS = str(Path(__file__).resolve().parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str, overrides: dict) -> None:
    import os

    sys.path.insert(0, TESTS)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    from training_helpers import small_run as make

    train(make(**overrides), out)


# No dropout: each process draws its own masks, so only the deterministic model can match exactly.
DDP_RUN = {"model.dropout": 0.0, "train.max_steps": 4, "train.ckpt_every": 2, "train.eval_every": 0}


@pytest.fixture(scope="module")
def single_process_curve(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("single") / "run"
    train(small_run(**DDP_RUN), out)
    return read_metrics(out)


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_match_one_process(tmp_path, single_process_curve, fsdp):
    out = tmp_path / "parallel"
    mp.spawn(_worker, args=(2, _free_port(), str(out), {**DDP_RUN, "train.fsdp": fsdp}), nprocs=2, join=True)
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for x, y in zip(single_process_curve, records):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4), (x, y)
        assert y["tokens"] == x["tokens"]
    # The final model (gathered from the shards under FSDP) is written once, by rank 0.
    assert (out / "model" / "model.safetensors").is_file() and (out / "summary.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]


def _killed_worker(rank: int, world_size: int, port: int, out: str, overrides: dict, die_at: int) -> None:
    """A rank that SIGKILLs itself while computing step ``die_at`` (0-based), as an out-of-memory kill would."""
    import os
    import signal

    sys.path.insert(0, TESTS)
    from decaylab.training import loop

    original = loop._Trainer._train_step

    def step(self, s):
        if s == die_at and rank == world_size - 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, s)

    loop._Trainer._train_step = step
    _worker(rank, world_size, port, out, overrides)


LONG_RUN = {**DDP_RUN, "train.max_steps": 6}


@pytest.fixture(scope="module")
def single_process_long_curve(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("single-long") / "run"
    train(small_run(**LONG_RUN), out)
    return read_metrics(out)


def _resume(out: Path, world_size: int) -> None:
    if world_size == 1:
        train(None, out, resume=True)
    else:
        mp.spawn(_resume_worker, args=(world_size, _free_port(), str(out)), nprocs=world_size, join=True)


def _assert_follows(curve: list[dict], out: Path, world_size: int) -> None:
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert read_json(out / "summary.json")["world_size"] == world_size
    for x, y in zip(curve, records):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)


# FSDP2 needs several processes, so its checkpoints move between 2 and 4; DDP's between 2 and 1.
@pytest.mark.parametrize("fsdp, resumed_by", [(False, 1), (True, 4)], ids=["ddp", "fsdp2"])
def test_a_killed_rank_leaves_a_run_that_resumes_on_another_number_of_processes(
    tmp_path, single_process_long_curve, fsdp, resumed_by
):
    """Two ranks, one killed while computing step 5 (after the step-4 checkpoint): the run resumes on another
    number of processes and follows the uninterrupted single-process curve."""
    out = tmp_path / "run"
    overrides = {**LONG_RUN, "train.fsdp": fsdp}
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_killed_worker, args=(2, _free_port(), str(out), overrides, 4), nprocs=2, join=True)
    assert not (out / "summary.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    _resume(out, resumed_by)
    assert read_json(out / "summary.json")["resumed_from"] == 4
    _assert_follows(single_process_long_curve, out, resumed_by)


def test_a_one_process_checkpoint_resumes_on_two(tmp_path, single_process_long_curve):
    import shutil

    out = tmp_path / "run"
    train(small_run(**LONG_RUN), out)
    for name in ("summary.json", "model", "checkpoints/step-6"):  # as if killed after the step-4 checkpoint
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    _resume(out, 2)
    _assert_follows(single_process_long_curve, out, 2)


def _resume_worker(rank: int, world_size: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    train(None, out, resume=True)


def read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())
