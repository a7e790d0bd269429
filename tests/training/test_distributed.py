"""Data-parallel training (DDP and FSDP2): 2 CPU processes on gloo follow the single-process loss curve."""

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
