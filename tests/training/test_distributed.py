"""Data-parallel training: 2 CPU processes on gloo follow the single-process loss curve with the same global batch."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from training_helpers import small_run

from decaylab.training.loop import train
from decaylab.training.rundir import read_metrics

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


def test_two_processes_match_one_process(tmp_path):
    single = tmp_path / "single"
    train(small_run(**DDP_RUN), single)
    ddp = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(ddp), DDP_RUN), nprocs=2, join=True)
    a, b = read_metrics(single), read_metrics(ddp)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4), (x, y)
        assert y["tokens"] == x["tokens"]
    assert (ddp / "model" / "model.safetensors").is_file() and (ddp / "summary.json").is_file()
