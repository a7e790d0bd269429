"""docs/results.md quotes reports generated from the committed exports: regenerating them gives the same text."""

from __future__ import annotations

from pathlib import Path

import pytest

from decaylab.cli import main

REPO = Path(__file__).resolve().parents[2]
GENERATED = "### The report (generated)"


def _generated_section(doc: str) -> list[str]:
    body = doc[doc.index(GENERATED) + len(GENERATED):]
    body = body[:body.index("\n## ")] if "\n## " in body else body  # up to the next study's section
    return [line for line in body.splitlines() if line.strip()]


def _as_quoted(report: str) -> list[str]:
    """The report from its findings on, as docs/results.md quotes it: headings one level down, figures moved."""
    body = report[report.index("## Findings"):].replace("](report_files/", "](results/paper/")
    return [("#" + line if line.startswith("## ") else line) for line in body.splitlines() if line.strip()]


@pytest.mark.slow
def test_results_doc_matches_the_committed_paper_export(tmp_path):
    export = REPO / "docs" / "results" / "paper.jsonl"
    assert main(["report", str(export), "--out", str(tmp_path / "paper")]) == 0
    quoted = _generated_section((REPO / "docs" / "results.md").read_text())
    regenerated = _as_quoted((tmp_path / "paper" / "report.md").read_text())
    quoted[0] = quoted[0].replace("#### Findings", "### Findings")
    assert quoted == regenerated
    figures = {p.name for p in (tmp_path / "paper" / "report_files").iterdir()}
    assert figures == {p.name for p in (REPO / "docs" / "results" / "paper").iterdir()}


@pytest.mark.slow
def test_results_doc_matches_the_committed_decay_range_export(tmp_path):
    export = REPO / "docs" / "results" / "decay-range.jsonl"
    assert main(["report", str(export), "--out", str(tmp_path / "range")]) == 0
    doc = (REPO / "docs" / "results.md").read_text()
    quoted = _generated_section(doc[doc.index("## Beyond the paper: the best decay range"):])
    report = (tmp_path / "range" / "report.md").read_text()
    section = report[report.index("## Decay range across settings"):]
    section = section[:section.index("\n## ", 1)]  # the verdicts and their figures, without the per-setting tables
    regenerated = [line.replace("](report_files/", "](results/decay-range/") for line in section.splitlines()[1:]
                   if line.strip()]  # fmt: skip
    assert len(regenerated) > 10 and quoted == regenerated
    figures = {p.name for p in (tmp_path / "range" / "report_files").iterdir() if p.name.startswith("range-")}
    assert figures == {p.name for p in (REPO / "docs" / "results" / "decay-range").iterdir()}
