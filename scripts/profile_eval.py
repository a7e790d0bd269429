"""Where a finished run's evaluation spends its time: ``python scripts/profile_eval.py [--steps N] [KEY=VALUE ...]``.

Trains a ``ptb-small`` run for a few steps (the same evaluation as a full run's), then evaluates it three times in
one process: the first call pays the kernels' compilation, the later ones show the steady cost a sweep worker pays
per run. Prints the seconds from stage to stage (each stage synchronised on a GPU) and, for the last call, the
functions that took the most time (cProfile, cumulative). Then the same in bf16 autocast (``evaluate(...,
precision="bf16")``, twice: compilation, then the steady cost) and how far its losses are from fp32's.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import torch

from decaylab.evaluation import evaluate
from decaylab.training import resolve_run_config, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE settings of the run preset")
    args = parser.parse_args()
    changes = dict(item.split("=", 1) for item in args.overrides)
    config = resolve_run_config("ptb-small", None, {**changes, "train.max_steps": args.steps})
    with tempfile.TemporaryDirectory() as out:
        train(config, out)
        for attempt in range(3):
            last = time.perf_counter()

            def stage(message: str) -> None:
                nonlocal last
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                now = time.perf_counter()
                print(f"  +{now - last:6.3f} s  then: {message}")
                last = now

            profiler = cProfile.Profile() if attempt == 2 else None
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            result = evaluate(out, log=stage)
            if profiler:
                profiler.disable()
            stage("written")
            print(f"== evaluation {attempt + 1}: {time.perf_counter() - started:.3f} s "
                  f"(eval_time_s {result['eval_time_s']}, test ppl {result['test_ppl']:.2f})")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        exact = result
        for attempt in range(2):
            result = evaluate(out, precision="bf16", log=stage)
            stage("written")
            print(f"== bf16 evaluation {attempt + 1}: eval_time_s {result['eval_time_s']}")
        for key in ("val_loss", "test_loss"):
            print(f"   {key}: fp32 {exact[key]:.6f}, bf16 {result[key]:.6f} ({result[key] / exact[key] - 1:+.2e})")
        for factor, ppl in exact["extrapolation"].items():
            print(f"   extrapolation {factor}x ppl: fp32 {ppl:.4f}, bf16 {result['extrapolation'][factor]:.4f}")


if __name__ == "__main__":
    main()
