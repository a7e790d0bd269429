"""End to end on real tiny runs: `decaylab sweep` (a few steps) then `decaylab report` renders tables and plots."""

from __future__ import annotations

import base64
import re
import textwrap

import pytest

from synthetic import ppl, row, sweep

from decaylab.cli import build_parser, main
from decaylab.report.findings import METHOD, all_findings
from decaylab.report.render import _html, _markdown, write_report

SMOKE = """
name = "smoke"
base = "tiny"
seeds = [0]
[budget]
max_steps = 3
[overrides]
"train.progress" = false
"train.warmup_steps" = 1
"train.eval_every" = 0
"train.ckpt_every" = 0
[evaluation]
max_tokens = 1000
extrapolation = [1, 2]
decay_tokens = 128
[studies]
granularity = "C. Scalar vs vector decay"
[[points]]
study = "granularity"
label = "SD vector"
set = { "model.decay.kind" = "simple" }
[[points]]
study = "granularity"
label = "SD scalar"
set = { "model.decay.kind" = "simple", "model.decay.granularity" = "scalar" }
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    spec = root / "smoke.toml"
    spec.write_text(textwrap.dedent(SMOKE))
    out = root / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "2"]) == 0
    return out


def test_report_renders_tables_plots_and_findings(sweep_dir):
    assert main(["report", str(sweep_dir)]) == 0
    md = (sweep_dir / "report.md").read_text()
    assert "## C. Scalar vs vector decay" in md
    assert re.search(r"\| Method \| Params \| Tokens \| Val ppl \| Test ppl \| Extrap\. ppl @128 \|", md)
    rows = [line for line in md.splitlines() if line.startswith("| SD ")]
    assert len(rows) == 2 and all("1/1" in r for r in rows)
    # one seed and one pair: the population interval cannot be formed, so the verdict is inconclusive
    (finding3,) = [line for line in md.splitlines() if line.startswith("**3. Vector decay usually beats scalar")]
    assert "— **inconclusive**: vector vs scalar" in finding3 and "no CI; 1 pair, 1 seed)" in finding3
    assert "- SD vector vs SD scalar: " in md and "(1 seed, no CI)" in md
    assert "Method: a pair is two configurations" in md
    for kind in ("decay", "loss", "extrapolation"):
        path = sweep_dir / "report_files" / f"granularity-{kind}.png"
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert f"report_files/granularity-{kind}.png" in md

    page = (sweep_dir / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "<td>SD vector</td>" in page and "report_files/" not in page  # self-contained


def test_rerun_skips_finished_points(sweep_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("runs/*/summary.json")}
    assert main(["sweep", str(sweep_dir.parent / "smoke.toml"), "--out", str(sweep_dir)]) == 0
    assert "2 already finished, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("runs/*/summary.json")} == before


def test_report_of_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="run `decaylab sweep"):
        write_report(tmp_path)


def test_sweep_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "quik", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'quick'" in capsys.readouterr().err
    assert main(["sweep", "quick", "--out", str(tmp_path), "--set", "train.max_stepz=5", "--dry-run"]) == 2
    assert "max_steps" in capsys.readouterr().err  # did-you-mean from the run config


def test_every_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("sweep", "report"):
        for action in sub.choices[name]._actions:
            assert action.help, f"decaylab {name}: {action.option_strings or action.dest} has no help"


MQAR_SMOKE = """
name = "recall-smoke"
base = "mqar"
seeds = [0]
[budget]
max_steps = 3
[overrides]
"train.progress" = false
"train.warmup_steps" = 1
"train.batch_size" = 4
"train.seq_len" = 32
"train.eval_every" = 3
"train.eval_batches" = 1
"train.ckpt_every" = 0
"data.mqar_num_kv_pairs" = 4
"data.mqar_eval_examples" = 8
[evaluation]
decay_tokens = 32
[studies]
parameterization = "A. Decay parameterization"
[[points]]
study = "parameterization"
label = "SD-0.99"
set = { "model.decay.kind" = "simple" }
[[points]]
study = "parameterization"
label = "Mamba2 w/o Δ"
set = { "model.decay.kind" = "mamba2_no_dt" }
"""


def test_recall_sweep_is_reported_by_accuracy(tmp_path):
    spec = tmp_path / "recall.toml"
    spec.write_text(textwrap.dedent(MQAR_SMOKE))
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "2"]) == 0
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    # recall runs log a validation loss too, but no test perplexity: the table shows accuracy, not a blank column
    assert re.search(r"\| Method \| Params \| Tokens \| Val ppl \| MQAR acc\. \| Median λ \|", md)
    assert "Test ppl" not in md
    # finding 1 relates accuracy (not perplexity) to the learned median decay; one seed gives no interval
    assert "- mqar_accuracy by median decay (all layers): " in md
    assert re.search(r"- best vs worst: .* \(1 seed, no CI\) \(mqar_accuracy, accuracy points\)", md)


def test_verdicts_render_with_method_evidence_and_lines_beyond_the_paper():
    rows = []
    for i, kind in enumerate("abc"):
        none = ppl(100.0 + 10 * i, 0.0)
        rows.append(row(f"{kind} none", none, model__decay__kind=kind))
        rows.append(row(f"{kind} tpe", ppl(100.0 + 10 * i, 0.2, sigma=0.01, shift=i), model__decay__kind=kind,
                        model__pos="tpe"))  # fmt: skip
    data = sweep(pos=rows)
    verdicts = all_findings(data)
    md = _markdown(data, {"pos": {}}, verdicts)
    assert METHOD in md
    assert "**4. RoPE rarely gives decay linear attention a tangible benefit.** — **no data**" in md
    tpe = [line for line in md.splitlines() if line.startswith("*Beyond the paper: TPE")]
    assert len(tpe) == 1 and "— **contradicted**: TPE helps significantly" in tpe[0]
    assert "- a tpe vs a none: +18.1% [" in md and "- population (test_ppl, % lower perplexity)" in md
    page = _html(data, {"pos": {}}, verdicts)
    assert "<b class='contradicted'>contradicted</b>" in page and "<i>Beyond the paper: LRPE" in page
    assert "<li>a tpe vs a none: +18.1% [" in page


def test_export_rebuilds_the_same_report(sweep_dir, tmp_path):
    """`report DIR --export FILE` then `report FILE --out DIR2`: the same tables, verdicts and figures."""
    export = tmp_path / "results.jsonl"
    assert main(["report", str(sweep_dir), "--export", str(export)]) == 0
    lines = export.read_text().splitlines()
    assert len(lines) == 3 and '"base_config"' in lines[0]  # the sweep line, then one line per run
    rebuilt = tmp_path / "rebuilt"
    assert main(["report", str(export), "--out", str(rebuilt)]) == 0
    original = (sweep_dir / "report.md").read_text().replace(str(sweep_dir), "DIR")
    again = (rebuilt / "report.md").read_text().replace(str(rebuilt), "DIR")
    assert again == original
    assert sorted(p.name for p in (rebuilt / "report_files").iterdir()) == sorted(
        p.name for p in (sweep_dir / "report_files").iterdir()
    )


def test_export_errors_name_the_fix(sweep_dir, tmp_path, capsys):
    export = tmp_path / "results.jsonl"
    assert main(["report", str(sweep_dir), "--export", str(export)]) == 0
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(export.read_text()[:-40] + "\n")
    cases = [
        (["report", str(export)], "give --out DIR"),
        (["report", str(export), "--out", str(sweep_dir)], "import into a new directory"),
        (["report", str(damaged), "--out", str(tmp_path / "x")], "line 3 is not valid JSON"),
        (["report", str(sweep_dir), "--out", str(tmp_path / "y")], "--out is for a .jsonl export"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "results.sqlite").exists() and not (tmp_path / "y").exists()
