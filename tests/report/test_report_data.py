"""A results database with a failed seed: rows keep each value's seed, so verdicts pair seed s with seed s."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from decaylab.report.data import decay_medians, load_sweep
from decaylab.report.findings import all_findings
from decaylab.report.render import write_report
from decaylab.sweep.db import ResultsDB

# (label, share, test ppl per seed, median decay per seed); seed 1 of the shared model failed
POINTS = [("GLA", False, (100.0, 104.0, 102.0), (0.95, 0.95, 0.95)),
          ("GLA-Share", True, (110.0, None, 111.0), (0.999, None, 0.999))]  # fmt: skip


@pytest.fixture
def sweep_dir(tmp_path):
    db = ResultsDB(tmp_path / "results.sqlite")
    runs = []
    for index, (label, share, _, _) in enumerate(POINTS):
        for seed in range(3):
            config = {"model": {"mixer": "linear", "decay": {"kind": "gla", "share": share}}, "train": {"seed": seed}}
            member = SimpleNamespace(study="sharing", label=label, seed=seed, point_index=index)
            runs.append(SimpleNamespace(run_id=f"{label}-{seed}", config=config, memberships=[member]))
    db.set_plan({"name": "db-test", "studies": [["sharing", "B. Sharing"]]}, runs)
    for label, _, ppls, decays in POINTS:
        for seed, (ppl, decay) in enumerate(zip(ppls, decays)):
            run_id = f"{label}-{seed}"
            db.mark_running(run_id)
            if ppl is None:
                db.mark_failed(run_id, "Traceback ...\nRuntimeError: out of memory")
                continue
            stats = {"median": decay, "p25": decay - 0.01, "p75": min(decay + 0.01, 1.0)}
            db.mark_finished(run_id, {"metrics": {"test_ppl": ppl}, "curves": {}, "decay_stats": {0: stats, 1: stats}})
    db.close()
    return tmp_path


def test_rows_keep_the_seed_of_each_value(sweep_dir):
    data = load_sweep(sweep_dir)
    plain, shared = data.rows["sharing"]
    assert plain.seeds == [0, 1, 2] and shared.seeds == [0, 1, 2]
    assert shared.stat("test_ppl").by_seed() == {0: 110.0, 2: 111.0}  # the failed seed 1 has no value
    assert decay_medians(shared, data.decay_stats).by_seed() == {0: 0.999, 2: 0.999}


def test_verdicts_pair_only_the_seeds_both_finished(sweep_dir):
    sharing = all_findings(load_sweep(sweep_dir))[1]
    assert sharing.evidence[0].startswith("GLA-Share vs GLA: -9.") and "(2 seeds)" in sharing.evidence[0]
    assert sharing.verdict == "supported"  # 10% and 8.8% worse on seeds 0 and 2, decay 1.7 decades toward 1
    md, _ = write_report(sweep_dir)
    text = md.read_text()
    assert "**2. Sharing the decay with the key can push decay values too far and hurt.** — **supported**" in text
    assert "GLA-Share failed: RuntimeError: out of memory" in text
