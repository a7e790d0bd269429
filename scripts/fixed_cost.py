"""How much of a packed sweep's time went to its runs' fixed cost, group by group.

    python scripts/fixed_cost.py runs/paper

A group is the runs one worker process trained together (``decaylab sweep --runs-per-worker K``); their
summaries carry the group's timing (``decaylab.training.together``). A group's wall time is its process's age when
the group began (start-up, imports; for a worker's later groups, the time since it took the group) plus the time
from then to its last run's end, the time its eval.json was written (building the runs, training, evaluating each; file times survive a sweep resumed elsewhere, where
results.sqlite re-stamps the runs it finds finished). Its training time is the loop from the
first step to the last run's last step; the rest is fixed cost: start-up, data, model builds, CUDA-graph captures
(the first step of each run), evaluation, figures and saving. Prints, per group and in all, the fixed cost's share
of the wall time and its seconds per run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def groups(sweep: Path) -> list[dict]:
    found: dict[tuple, dict] = {}
    for run_dir in sorted((sweep / "runs").iterdir()):
        path, evaluated = run_dir / "summary.json", run_dir / "eval.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        if "together_runs" not in summary:
            continue  # trained alone (or not yet)
        end = (evaluated if evaluated.is_file() else path).stat().st_mtime
        eval_s = json.loads(evaluated.read_text()).get("eval_time_s", 0.0) if evaluated.is_file() else 0.0
        key = (
            summary["together_started_at"],
            summary["together_runs"],
            summary["together_build_s"],
            summary.get("together_process_s"),
        )
        g = found.setdefault(key, {"runs": 0, "end": end, "loop": 0.0, "eval": 0.0})
        g["runs"] += 1
        g["eval"] += eval_s
        g["end"] = max(g["end"], end)
        g["loop"] = max(g["loop"], summary["together_loop_s"])
    out = []
    for (start, size, build, process), g in found.items():
        wall = (process or 0.0) + g["end"] - start
        out.append({"size": size, "finished": g["runs"], "wall": wall, "loop": g["loop"], "build": build,
                    "process": process, "eval": g["eval"], "fixed": wall - g["loop"]})  # fmt: skip
    return sorted(out, key=lambda g: -g["wall"])


def main(sweep: str) -> None:
    found = groups(Path(sweep))
    if not found:
        print(f"{sweep}: no runs trained in groups (decaylab sweep --runs-per-worker K, K >= 2)")
        return
    for g in found:
        print(f"group of {g['size']} ({g['finished']} finished): wall {g['wall']:.1f} s = start-up {g['process'] or 0:.1f} "
              f"+ build {g['build']:.1f} + training {g['loop']:.1f} + evaluation {g['eval']:.1f} "
              f"+ the rest {g['wall'] - g['loop'] - g['build'] - g['eval'] - (g['process'] or 0):.1f}; "
              f"fixed {100 * g['fixed'] / g['wall']:.0f} %, {g['fixed'] / g['size']:.1f} s per run")  # fmt: skip
    wall, fixed, runs, evals = (sum(g[k] for g in found) for k in ("wall", "fixed", "size", "eval"))
    shares = [g["fixed"] / g["wall"] for g in found]
    print(f"{len(found)} groups, {runs} runs: fixed cost {100 * fixed / wall:.1f} % of their wall time in all "
          f"(median group {100 * statistics.median(shares):.0f} %, {min(shares) * 100:.0f}-{max(shares) * 100:.0f} %), "
          f"{fixed / runs:.2f} s per run, of which evaluation {evals / runs:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
