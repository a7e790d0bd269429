"""Test perplexity of the same (configuration, seed) points in two results exports, side by side.

    python scripts/compare_results.py docs/results/paper.jsonl other.jsonl

Points are matched by run id (a run id is the hash of the full run config, seed included): a sweep trained two
ways (alone, or several runs together in one process) gives the same ids. Prints the relative difference
(B / A - 1) of each matched point's test perplexity, its mean, sd and extremes, the failed runs of B, and the
scale of seed noise in A (how far two seeds of one configuration are apart), against which a B trained another way
(other kernels, other numerics) is judged.
"""

from __future__ import annotations

import json
import statistics
import sys


def load(path: str) -> dict[str, dict]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["run"]: r for r in rows if "run" in r}


def main(a_path: str, b_path: str) -> None:
    a, b = load(a_path), load(b_path)
    diffs = []
    for run, rb in sorted(b.items()):
        ra = a.get(run)
        if rb["status"] != "finished":
            print(f"{run} {rb['members'][0][1]} seed {rb['seed']}: {rb['status']} in B ({rb.get('error')})")
            continue
        if ra is None or ra["status"] != "finished":
            continue
        pa, pb = ra["metrics"]["test_ppl"], rb["metrics"]["test_ppl"]
        diffs.append((pb / pa - 1, rb["members"][0][1], rb["seed"], pa, pb))
    if not diffs:
        print("no finished points in common")
        return
    rel = [d[0] for d in diffs]
    print(f"{len(diffs)} points in common: test ppl B/A - 1 mean {100 * statistics.mean(rel):+.2f} %, "
          f"sd {100 * statistics.pstdev(rel):.2f} %, min {100 * min(rel):+.2f} %, max {100 * max(rel):+.2f} %")
    for d, label, seed, pa, pb in sorted(diffs, key=lambda d: -abs(d[0]))[:8]:
        print(f"  {label} seed {seed}: {pa:.2f} -> {pb:.2f} ({100 * d:+.2f} %)")
    spread = seed_spread(a)
    if spread is not None:
        print(f"the scale of seed noise: in A, the sd over seeds of one configuration's test ppl is {100 * spread:.2f} % "
              f"(median over configurations with 2 or more seeds); a B trained another way but as well has B/A - 1 "
              f"of mean near 0 and sd near {100 * spread * 2 ** 0.5:.2f} % (two seeds' difference)")
    pairs = seed_pair_rms(a)
    if pairs is not None:  # the median above understates seed noise's heavy tail; all pairs show it
        rms = statistics.fmean(d * d for d in rel) ** 0.5
        print(f"over every pair of seeds of one configuration in A, p_j / p_i - 1 has RMS {100 * pairs:.2f} %; "
              f"B/A - 1 has RMS {100 * rms:.2f} %")


def seed_spread(runs: dict[str, dict]) -> float | None:
    """Median over configurations of the relative sd of test ppl over their seeds (None without two seeds)."""
    by_config: dict[str, list[float]] = {}
    for r in runs.values():
        if r["status"] == "finished" and r["metrics"].get("test_ppl"):
            by_config.setdefault(r["members"][0][1], []).append(r["metrics"]["test_ppl"])
    sds = [statistics.stdev(v) / statistics.mean(v) for v in by_config.values() if len(v) >= 2]
    return statistics.median(sds) if sds else None


def seed_pair_rms(runs: dict[str, dict]) -> float | None:
    """Root mean square of p_j / p_i - 1 over every pair of seeds (i, j) of one configuration (None without two)."""
    by_config: dict[str, list[float]] = {}
    for r in runs.values():
        if r["status"] == "finished" and r["metrics"].get("test_ppl"):
            by_config.setdefault(r["members"][0][1], []).append(r["metrics"]["test_ppl"])
    diffs = [v[j] / v[i] - 1 for v in by_config.values() for i in range(len(v)) for j in range(len(v)) if i != j]
    return statistics.fmean(d * d for d in diffs) ** 0.5 if diffs else None


if __name__ == "__main__":
    main(*sys.argv[1:3])
