"""Aten ops one training step dispatches on the CPU: R models stacked as replicas against one model alone.

    python scripts/count_step_ops.py

A proxy for the launches of a GPU step, measured without a GPU: every op the step dispatches (views included) on
the CPU's code paths, which lack the GPU's fused norms and stacked projections. The step is the graphed step's
math run eagerly (``GraphedTrainStep`` and ``ReplicatedGraphedStep`` on a CPU), on the small test model of
tests/training/test_replicas.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from decaylab.training.cuda_graph import GraphedTrainStep
from decaylab.training.replicas import ReplicatedGraphedStep
from tests.training.test_replicas import ROWS, T, _adamw, _batches, _models


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(step, x, y) -> int:
    step(x, y, 1e-3)  # the first step builds the optimizer state
    with _Count() as count:
        step(x, y, 1e-3)
    return count.ops


def main() -> None:
    print(f"{'design':28s} {'stacked (3 runs)':>17s} {'one run':>8s} {'3 runs alone':>13s}")
    for design in ({"decay.kind": "simple", "decay.granularity": "scalar"},
                   {"decay.kind": "gla", "decay.granularity": "vector"}):  # fmt: skip
        models, alone = _models("cpu", **design), _models("cpu", **design)[0]
        settings = {"rows": ROWS, "seq_len": T, "grad_accum": 1, "max_norm": 1.0, "autocast_dtype": None}
        stacked = ReplicatedGraphedStep(models, _adamw(models[0]), **settings)
        single = GraphedTrainStep(alone, alone, _adamw(alone), **settings)
        ((x, y),) = _batches(1)
        n_stacked, n_single = ops_per_step(stacked, x, y), ops_per_step(single, x[0], y[0])
        label = f"{design['decay.kind']} {design['decay.granularity']}"
        print(f"{label:28s} {n_stacked:>17,d} {n_single:>8,d} {3 * n_single:>13,d}")


if __name__ == "__main__":
    main()
