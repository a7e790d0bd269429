"""report.md and a self-contained report.html (figures embedded as base64 PNG data URIs) for a sweep.

Both are built from the same pieces: per study a table (sorted best first by the score), the median-decay
figure, loss and extrapolation curves; first the verdicts on the paper's four findings: the method in one paragraph,
then per finding its verdict, the sentence saying why, and the evidence (per-pair lines and the population
statistic), with the LRPE and TPE tests beyond the paper under finding 4.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from decaylab.files import atomic_write_text
from decaylab.report.convergence import training_end_line
from decaylab.report.data import Row, Stat, SweepData, decay_medians, load_sweep, sorted_rows
from decaylab.report.decay_range import RangeAnalysis, analyse
from decaylab.report.findings import METHOD, Verdict, all_findings
from decaylab.report.plots import study_figures
from decaylab.report.range_plots import range_figures

FIGURE_DIR = "report_files"
FIGURE_TITLES = {
    "decay": "Median decay per layer (one line per method)",
    "loss": "Training loss",
    "extrapolation": "Length extrapolation",
    "range-lm": "Perplexity against learned median decay, one line per context length",
    "range-recall": "Recall against learned median decay, one line per difficulty",
    "range-half-life": "Half-life of the best decay (and, in grey, of each design) against context length",
}
RANGE_METHOD = (
    "Method: per setting, the best design is the one of best mean score over seeds; its half-life is "
    "ln 0.5 / ln(learned median decay) tokens, with a 95 % interval from a parametric bootstrap (the designs' means "
    "redrawn with the setting's pooled seed sd, the winner's decay from a resample of its seeds). Question 1 compares "
    "the best half-life at the longest and the shortest context: it moves if the interval of their log ratio excludes "
    "0, it stays if the interval lies within a factor of 2. Question 2 takes the best design at the longest context "
    "and compares every other design with it on each recall setting (Bonferroni-corrected intervals): contradicted if "
    "one recalls significantly better by 1 point or more, supported if none can be 1 point better; recall settings "
    "where the designs do not separate (all near chance) are left out. "
    "decaylab/report/decay_range.py gives each rule."
)


def _ms(stat: Stat, digits: int = 2) -> str:
    if not stat.n:
        return "–"
    return f"{stat.mean:.{digits}f}" if stat.std is None else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _count(stat: Stat, unit: float, suffix: str) -> str:
    return f"{stat.mean / unit:.2f}{suffix}" if stat.n else "–"


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a study table; perplexity, extrapolation and MQAR columns only when some row has them
    (a recall study has no test perplexity; its validation perplexity is that of the answers at the queries)."""
    rows = sorted_rows(rows)
    lengths = {r.stat("extrapolation_length").mean for r in rows if r.stat("extrapolation_length").n}
    extrap_head = f"Extrap. ppl @{int(max(lengths))}" if len(lengths) == 1 else "Extrap. ppl (longest)"
    columns = [
        ("Method", lambda r: r.label),
        ("Params", lambda r: _count(r.stat("num_params"), 1e6, "M")),
        ("Tokens", lambda r: _count(r.stat("tokens"), 1e6, "M")),
    ]
    for name, head in (("val_ppl", "Val ppl"), ("test_ppl", "Test ppl")):
        if any(r.stat(name).n for r in rows):
            columns.append((head, lambda r, name=name: _ms(r.stat(name))))
    if lengths:
        columns.append((extrap_head, lambda r: _ms(r.stat("extrapolation_ppl"))))
    if any(r.stat("mqar_accuracy").n for r in rows):
        columns.append(("MQAR acc.", lambda r: _ms(r.stat("mqar_accuracy"), 3)))
    columns += [
        ("Median λ", lambda r: _ms(r.stat("decay_median"), 3)),
        ("Tokens/s", lambda r: f"{r.stat('tokens_per_s').mean:,.0f}" if r.stat("tokens_per_s").n else "–"),
        ("Seeds", _seeds),
    ]
    return [c[0] for c in columns], [[c[1](r) for c in columns] for r in rows]


def _seeds(row: Row) -> str:
    done = row.statuses.count("finished")
    other = [s for s in row.statuses if s != "finished"]
    return f"{done}/{len(row.statuses)}" + (f" ({', '.join(sorted(set(other)))})" if other else "")


def _add_decay_medians(data: SweepData) -> None:
    # The pooled (all layers) median decay of each run becomes a row metric, so tables can show it.
    for rows in data.rows.values():
        for row in rows:
            row.metrics["decay_median"] = decay_medians(row, data.decay_stats)


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Write DIR/report.md (figures in DIR/report_files/) and DIR/report.html; returns both paths."""
    data = load_sweep(out_dir)
    _add_decay_medians(data)
    figures = {
        study: study_figures(data, study, title, data.rows[study], data.out_dir / FIGURE_DIR)
        for study, title in data.studies
    }
    ranged = analyse(data)
    if ranged:
        ranged.figures = range_figures(ranged.lm, ranged.recall, ranged.bests, data.out_dir / FIGURE_DIR)
    verdicts = all_findings(data)
    if ranged and all(v.verdict == "no data" for v in verdicts):
        verdicts = []  # a sweep of settings, not of the paper's tables: its own questions replace the four findings
    md, page = _markdown(data, figures, verdicts, ranged), _html(data, figures, verdicts, ranged)
    paths = data.out_dir / "report.md", data.out_dir / "report.html"
    for path, text in zip(paths, (md, page)):
        atomic_write_text(path, text)
    return paths


def _header_lines(data: SweepData) -> list[str]:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(data.status_counts.items()))
    lines = [f"Sweep `{data.name}` in `{data.out_dir}`: {counts}."]
    if data.description:
        lines.append(data.description)
    if data.overrides:
        lines.append("Overrides for every point: " + ", ".join(f"`{k}={v}`" for k, v in data.overrides.items()))
    return lines


def _markdown(data: SweepData, figures: dict[str, dict[str, Path]], verdicts: list[Verdict],
              ranged: RangeAnalysis | None = None) -> str:  # fmt: skip
    out = [f"# Decay design-space report: {data.name}", "", *[line + "\n" for line in _header_lines(data)]]
    if ranged:
        out += ["## Decay range across settings", "", RANGE_METHOD, "", *_markdown_verdicts(ranged.verdicts)]
        for kind, path in ranged.figures.items():
            out += [f"![{FIGURE_TITLES[kind]}]({FIGURE_DIR}/{path.name})", ""]
    if verdicts:
        out += ["## Findings", "", METHOD, "", *_markdown_verdicts(verdicts)]
    for study, title in data.studies:
        head, cells = table(data.rows[study])
        out += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        out.append("")
        for kind, path in figures[study].items():
            out += [f"![{FIGURE_TITLES[kind]}]({FIGURE_DIR}/{path.name})", ""]
        if (line := training_end_line(data, study)) is not None:
            out += [line, ""]
        out += _failures(data.rows[study], lambda s: f"- {s}")
    return "\n".join(out) + "\n"


def _markdown_verdicts(verdicts: list[Verdict]) -> list[str]:
    out = []
    for v in verdicts:
        out += [f"**{v.number}. {v.claim}** — **{v.verdict}**: {v.reason}.", ""]
        out += [f"- {e}" for e in v.evidence] + ([""] if v.evidence else [])
        for b in v.beyond:
            out += [f"*{b.claim}* — **{b.verdict}**: {b.reason}.", ""]
            out += [f"- {e}" for e in b.evidence] + ([""] if b.evidence else [])
    return out


def _failures(rows: list[Row], bullet) -> list[str]:
    lines = []
    for row in rows:
        for error in row.errors:
            last = [line for line in error.strip().splitlines() if line.strip()][-1:] or ["unknown error"]
            lines.append(bullet(f"{row.label} failed: {last[0]}"))
    return (["Failed runs:", ""] + lines + [""]) if lines else []


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:48%;margin:4px}
.supported{color:#17692b}.contradicted{color:#a31b1b}.inconclusive,.no-data{color:#8a6d00}"""


def _html(data: SweepData, figures: dict[str, dict[str, Path]], verdicts: list[Verdict],
          ranged: RangeAnalysis | None = None) -> str:  # fmt: skip
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(data.name)} report</title>",
             f"<style>{_CSS}</style></head><body><h1>Decay design-space report: {e(data.name)}</h1>"]  # fmt: skip
    parts += [f"<p>{e(line)}</p>" for line in _header_lines(data)]
    if ranged:
        parts += ["<h2>Decay range across settings</h2>", f"<p>{e(RANGE_METHOD)}</p>"]
        parts += _html_verdicts(ranged.verdicts)
        parts += [_html_image(FIGURE_TITLES[kind], path) for kind, path in ranged.figures.items()]
    if verdicts:
        parts += ["<h2>Findings</h2>", f"<p>{e(METHOD)}</p>"]
    parts += _html_verdicts(verdicts)
    for study, title in data.studies:
        head, cells = table(data.rows[study])
        parts.append(f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in cells]
        parts.append("</table><div>")
        parts += [_html_image(FIGURE_TITLES[kind], path) for kind, path in figures[study].items()]
        parts.append("</div>")
        if (line := training_end_line(data, study)) is not None:
            parts.append(f"<p>{e(line)}</p>")
        failures = _failures(data.rows[study], lambda s: f"<li>{e(s)}</li>")
        if failures:
            parts.append("<p>Failed runs:</p><ul>" + "".join(failures[2:-1]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_image(title: str, path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{encoded}'>"


def _html_verdicts(verdicts: list[Verdict]) -> list[str]:
    e, parts = html.escape, []
    for v in verdicts:
        for sub in [v, *v.beyond]:
            claim = f"<b>{v.number}. {e(sub.claim)}</b>" if sub is v else f"<i>{e(sub.claim)}</i>"
            css = sub.verdict.replace(" ", "-")
            parts.append(f"<p>{claim} — <b class='{css}'>{e(sub.verdict)}</b>: {e(sub.reason)}.</p>")
            parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in sub.evidence) + "</ul>")
    return parts
