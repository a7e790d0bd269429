"""A stand-in for training and evaluation: writes a run directory in milliseconds, with controllable failures.

Module-level functions so spawned sweep workers can import them. Every call to ``train`` appends a line to
``RUN_DIR/calls.jsonl``, which is how tests see whether a run was redone or resumed.

Special decay kinds: ``boom`` raises inside training; ``crash`` kills the worker process outright; ``block``
writes a checkpoint and then waits forever while the file SWEEP_DIR/BLOCK exists (a run to kill mid-way);
``flaky`` raises while the file SWEEP_DIR/FAIL exists. Files, not environment variables: workers inherit the
environment of the fork server, not of the current caller.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

from decaylab.registry import closest
from decaylab.sweep.backend import RunBackend

BASES = {
    "fake": {
        "model": {"mixer": "linear", "pos": "none", "decay": {"kind": "simple", "p": 0.99, "granularity": "vector",
                                                              "share": False}},  # fmt: skip
        "train": {"max_steps": 10, "seed": 0, "batch_size": 2, "seq_len": 8, "lr": 1e-3},
        "data": {"corpus": "fake"},
    }
}


def resolve(base: str, overrides: Mapping[str, Any]) -> dict:
    if base not in BASES:
        raise ValueError(f"unknown run preset {base!r}.{closest(base, list(BASES))}")
    config = copy.deepcopy(BASES[base])
    for key, value in overrides.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown setting {key!r}")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"unknown setting {key!r}.{closest(leaf, list(node))}")
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], (int, float)) and not isinstance(
            node[leaf], bool) else value  # fmt: skip
    return config


def fake_val_ppl(config: Mapping[str, Any]) -> float:
    """A deterministic 'result': lower p is worse, vector beats scalar, plus a small per-seed wobble."""
    decay = config["model"]["decay"]
    ppl = 100.0 + 200.0 * (1.0 - float(decay["p"]))
    ppl += 5.0 if decay["granularity"] == "scalar" else 0.0
    return ppl + 0.3 * math.sin(config["train"]["seed"] + 1.0)


def train(config: dict, run_dir: Path, resume: bool) -> dict:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "calls.jsonl", "a") as f:
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None  # files the worker holds
        mps = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")  # the MPS daemon the worker would reach (runner --mps)
        f.write(json.dumps({"resume": resume, "pid": os.getpid(), "fds": fds, "mps": mps}) + "\n")
    (run_dir / "config.json").write_text(json.dumps(config))
    kind = config["model"]["decay"]["kind"]
    if kind == "boom":
        raise RuntimeError("boom: this point is broken on purpose")
    if kind == "crash":
        os._exit(9)
    if kind == "flaky" and (run_dir.parent.parent / "FAIL").exists():
        raise RuntimeError("flaky: SWEEP_DIR/FAIL exists")
    if kind == "block" and (run_dir.parent.parent / "BLOCK").exists():  # RUN_DIR = SWEEP_DIR/runs/<id>
        (run_dir / "checkpoints" / "step-1").mkdir(parents=True, exist_ok=True)
        while True:
            time.sleep(0.1)
    steps = config["train"]["max_steps"]
    ppl = fake_val_ppl(config)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(1, steps + 1):
            f.write(json.dumps({"step": step, "tokens": step * 16, "loss": math.log(ppl) + 1.0 / step}) + "\n")
    summary = {"status": "finished", "steps": steps, "tokens": steps * 16, "tokens_per_s": 1000.0, "num_params": 123}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def evaluate(run_dir: Path, **options) -> dict:
    config = json.loads((Path(run_dir) / "config.json").read_text())
    ppl = fake_val_ppl(config)
    p = float(config["model"]["decay"]["p"])
    layers = [{"layer": i, "granularity": "vector", "median": p ** (1.0 / i), "p25": p / 2, "p75": p} for i in (1, 2)]
    result = {
        "val_ppl": ppl,
        "test_ppl": ppl * 1.01,
        "extrapolation": [{"length": 8, "ppl": ppl}, {"length": 16, "ppl": ppl * 1.1}],
        "loss_by_position": [[0, 6.0], [4, 5.0]],
        "decay_stats": layers + [{"layer": "all", "granularity": "vector", "median": p}],
        "options": options,
    }
    (Path(run_dir) / "eval.json").write_text(json.dumps(result))
    return result


BACKEND = RunBackend(resolve=resolve, train=train, evaluate=evaluate)
