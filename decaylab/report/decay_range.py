"""Where the best decay sits, setting by setting: the same designs trained at several context lengths (language
modelling) and on several recall difficulties (MQAR), one study per setting.

A *setting* is a study whose linear rows share one score metric: a language-modelling study at one context length
(``train.seq_len``), or a recall study at one (sequence length, number of key-value pairs). The analysis runs when
a sweep has two or more settings of one kind that differ in those keys (``range_settings``); the ``decay-range``
preset is such a sweep. Rules, fixed before any result of that study was seen:

Best decay of a setting. Each design (a row) has a mean gain over its seeds (stats.py's scale: -ln ppl, or accuracy)
and a learned median decay (pooled over layers, mean over seeds), whose half-life is ``ln 0.5 / ln decay`` tokens.
The best design is the one of highest mean gain. Its uncertainty comes from a parametric bootstrap of BOOTSTRAP
draws (fixed RNG seed, so a report is reproducible): every design's mean gain is redrawn as
``mean + s * t / sqrt(n)``, s the setting's pooled within-design seed sd (df = sum of n - 1) and t a Student t draw
with those df, and the winner's log10 half-life is redrawn from a resample of its seeds. The 95 % interval of the
best half-life is the 2.5-97.5 percentile of the draws.

Q1, does the best decay range move with the context length? Between the shortest and the longest context,
``delta = log10 h(longest) - log10 h(shortest)`` of the best half-lives, from independent draws of the two
settings. Supported (it moves) if its 95 % interval excludes 0; contradicted (it stays) if the interval lies within
+-log10 2, a change of the half-life by less than a factor of 2 in either direction; else inconclusive.

Q2, is the design that is best for perplexity also best for recall? The perplexity-best design is the best at the
longest context (chosen on the language-modelling runs only, so the recall data do not select it). On each recall
setting every other design is compared with it: difference of mean accuracies with the setting's pooled seed sd
(df = sum of n - 1), simultaneous 95 % intervals by Bonferroni over all comparisons of the question. Contradicted
(another design recalls better) if some design's interval lies above 0 and its mean is at least M (1 accuracy
point) ahead; supported if every interval's upper end is below M (no design recalls M better); else inconclusive.
Only recall settings that separate the designs count: where the best and the worst design's mean accuracies differ
by at least M with the worst's interval (the same Bonferroni level) below the best. Where every design sits at
chance, no design can be "best for recall", and a question with no such setting is inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from scipy import stats as sps

from decaylab.report.data import SweepData, decay_medians
from decaylab.report.findings import Verdict
from decaylab.report.stats import ACCURACY, ALPHA, RNG_SEED, scale_of

BOOTSTRAP = 4000
FACTOR = 2.0  # Q1: a best half-life that changes by less than this factor either way has not moved


@dataclasses.dataclass
class Design:
    label: str
    gains: dict[int, float]  # seed -> gain
    decays: dict[int, float]  # seed -> learned median decay

    @property
    def gain(self) -> float:
        return float(np.mean(list(self.gains.values())))

    @property
    def decay(self) -> float | None:
        return float(np.mean(list(self.decays.values()))) if self.decays else None


def half_life(decay: float | None) -> float | None:
    """Tokens after which a decay has halved a memory: ln 0.5 / ln decay (None outside (0, 1))."""
    if decay is None or not 0.0 < decay < 1.0:
        return None
    return math.log(0.5) / math.log(decay)


@dataclasses.dataclass
class Setting:
    study: str
    seq_len: int
    kv_pairs: int | None  # recall settings only
    designs: list[Design]

    @property
    def is_recall(self) -> bool:
        return self.kv_pairs is not None

    @property
    def name(self) -> str:
        return f"T={self.seq_len}, {self.kv_pairs} pairs" if self.is_recall else f"context {self.seq_len}"

    def pooled_sd(self) -> tuple[float, int]:
        """Pooled within-design sd of the gains over seeds, and its degrees of freedom."""
        squares, df = 0.0, 0
        for d in self.designs:
            g = np.asarray(list(d.gains.values()))
            if len(g) >= 2:
                squares += float(((g - g.mean()) ** 2).sum())
                df += len(g) - 1
        return (math.sqrt(squares / df), df) if df else (0.0, 0)

    def best(self) -> Design:
        return max(self.designs, key=lambda d: d.gain)


def _setting(data: SweepData, study: str) -> Setting | None:
    rows = [r for r in data.rows.get(study, []) if not r.is_softmax and r.score]
    metrics = {r.score[0] for r in rows}
    if len(rows) < 2 or len(metrics) != 1:
        return None
    metric = metrics.pop()
    gain = scale_of(metric).gain
    designs = [Design(r.label, {s: gain(v) for s, v in r.score[2].by_seed().items()},
                      decay_medians(r, data.decay_stats).by_seed()) for r in rows]  # fmt: skip
    first = rows[0].config
    kv = first.get("data.mqar_num_kv_pairs") if metric == "mqar_accuracy" else None
    return Setting(study, int(first.get("train.seq_len", 0)), kv, designs)


def range_settings(data: SweepData) -> tuple[list[Setting], list[Setting]]:
    """(language-modelling settings by context length, recall settings by difficulty); a kind with fewer than two
    distinct settings is left empty, so a sweep without such a grid gets no decay-range section."""
    settings = [s for study, _ in data.studies if (s := _setting(data, study))]
    lm = sorted((s for s in settings if not s.is_recall), key=lambda s: s.seq_len)
    recall = sorted((s for s in settings if s.is_recall), key=lambda s: (s.seq_len, s.kv_pairs))
    if len({s.seq_len for s in lm}) < 2:
        lm = []
    if len({(s.seq_len, s.kv_pairs) for s in recall}) < 2:
        recall = []
    return lm, recall


# ---------------------------------------------------------------- best decay and its uncertainty


@dataclasses.dataclass
class BestDecay:
    setting: Setting
    design: Design
    half_life: float | None
    draws: np.ndarray  # log10 half-life of the winner, per bootstrap draw (NaN where it has no decay)
    winners: dict[str, float]  # label -> share of draws it won

    def interval(self) -> tuple[float, float] | None:
        finite = self.draws[np.isfinite(self.draws)]
        if len(finite) < 0.5 * len(self.draws):
            return None
        low, high = np.percentile(finite, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        return 10.0**low, 10.0**high


def best_decay(setting: Setting, rng: np.random.Generator) -> BestDecay:
    sd, df = setting.pooled_sd()
    means = np.array([d.gain for d in setting.designs])
    n = np.array([len(d.gains) for d in setting.designs])
    noise = sps.t.rvs(df, size=(BOOTSTRAP, len(means)), random_state=rng) if df else np.zeros((BOOTSTRAP, len(means)))
    winners = np.argmax(means + sd * noise / np.sqrt(n), axis=1)
    log_halves = [np.log10([h for v in d.decays.values() if (h := half_life(v))] or [np.nan]) for d in setting.designs]
    draws = np.array([rng.choice(log_halves[w], size=len(log_halves[w])).mean() for w in winners])
    best = setting.best()
    shares = {setting.designs[i].label: float(np.mean(winners == i)) for i in np.unique(winners)}
    return BestDecay(setting, best, half_life(best.decay), draws, dict(sorted(shares.items(), key=lambda kv: -kv[1])))


def _tokens(h: float | None) -> str:
    return "n/a" if h is None else f"{h:.3g}"


def best_line(b: BestDecay) -> str:
    ci = b.interval()
    ci_text = f"95% interval {_tokens(ci[0])}–{_tokens(ci[1])} tokens" if ci else "no interval"
    top = ", ".join(f"{label} {share:.0%}" for label, share in list(b.winners.items())[:3])
    decay = "n/a" if b.design.decay is None else f"{b.design.decay:.3f}"
    return (f"{b.setting.name}: best {b.design.label} (median decay {decay}, half-life {_tokens(b.half_life)} "
            f"tokens; {ci_text}); best in the bootstrap: {top}")  # fmt: skip


# ---------------------------------------------------------------- the two questions


def question_context(lm: list[Setting], rng: np.random.Generator) -> tuple[Verdict, list[BestDecay]]:
    claim = "Does the best decay range move with the context length?"
    if not lm:
        return Verdict(1, claim, "no data", "needs language-modelling studies at two or more context lengths", []), []
    bests = [best_decay(s, rng) for s in lm]
    evidence = [best_line(b) for b in bests]
    short, long = bests[0], bests[-1]
    delta = long.draws - short.draws
    delta = delta[np.isfinite(delta)]
    if len(delta) < 0.5 * BOOTSTRAP:
        return Verdict(1, claim, "inconclusive", "the best designs have no learned decay to compare", evidence), bests
    low, high = np.percentile(delta, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    ratio = f"×{10 ** np.median(delta):.2g} (95% interval ×{10 ** low:.2g} to ×{10 ** high:.2g})"
    what = f"the best half-life at {long.setting.name} against {short.setting.name} is {ratio}"
    if low > 0 or high < 0:
        verdict, why = "supported", f"{what}: it moves {'longer' if low > 0 else 'shorter'}"
    elif -math.log10(FACTOR) < low and high < math.log10(FACTOR):
        verdict, why = "contradicted", f"{what}: within a factor of {FACTOR:g} either way"
    else:
        verdict, why = "inconclusive", f"{what}: neither excludes no change nor a change of ×{FACTOR:g}"
    return Verdict(1, claim, verdict, why, evidence), bests


def question_recall(lm: list[Setting], recall: list[Setting]) -> Verdict:
    claim = "Is the design that is best for perplexity also best for recall?"
    if not lm or not recall:
        return Verdict(2, claim, "no data", "needs language-modelling and recall studies of the same designs", [])
    chosen = lm[-1].best().label
    separation_level = 1 - ALPHA / (2 * sum(len(s.designs) for s in recall))  # Bonferroni over every test asked
    flat = [s.name for s in recall if not _separates(s, separation_level)]
    recall = [s for s in recall if s.name not in flat]
    if not recall:
        return Verdict(2, claim, "inconclusive", f"no recall setting separates the designs (best and worst within "
                       f"{ACCURACY.fmt(ACCURACY.margin, False)} or not significantly apart): {', '.join(flat)}", [])  # fmt: skip
    comparisons = []  # (setting, the perplexity-best design, a rival design)
    for setting in recall:
        by_label = {d.label: d for d in setting.designs}
        if chosen in by_label:
            comparisons += [(setting, by_label[chosen], d) for d in setting.designs if d.label != chosen]
    if not comparisons or any(setting.pooled_sd()[1] == 0 for setting, _, _ in comparisons):
        return Verdict(2, claim, "no data", f"needs {chosen} and other designs with two or more seeds on recall", [])
    level = 1 - ALPHA / (2 * len(comparisons))  # Bonferroni, two-sided
    rivals, evidence = [], [f"perplexity-best design at {lm[-1].name}: {chosen}"]
    evidence += [f"{name}: the designs do not separate (left out)" for name in flat]
    upper_all = -math.inf
    for setting in recall:
        rows = [c for c in comparisons if c[0] is setting]
        if not rows:
            evidence.append(f"{setting.name}: {chosen} not trained")
            continue
        ahead = []
        for _, ref, rival in rows:
            diff, half = _difference(setting, rival, ref, level)
            upper_all = max(upper_all, diff + half)
            if diff - half > 0 and diff >= ACCURACY.margin:
                rivals.append(f"{rival.label} at {setting.name}")
                ahead.append(f"{rival.label} {ACCURACY.fmt(diff)} [{ACCURACY.fmt(diff - half, unit=False)}, "
                             f"{ACCURACY.fmt(diff + half, unit=False)}]")  # fmt: skip
        ref = rows[0][1]
        top = max((rival for _, _, rival in rows), key=lambda d: d.gain)
        line = (f"{setting.name}: {chosen} {100 * ref.gain:.1f}% accuracy; best {top.label} "
                f"{ACCURACY.fmt(top.gain - ref.gain)}")  # fmt: skip
        evidence.append(line + (f"; significantly ahead: {', '.join(ahead)}" if ahead else ""))
    n = len(comparisons)
    if rivals:
        return Verdict(2, claim, "contradicted", f"{', '.join(rivals)} recall(s) better than {chosen} by at least "
                       f"{ACCURACY.fmt(ACCURACY.margin, False)} ({n} Bonferroni-corrected comparisons)", evidence)  # fmt: skip
    if upper_all < ACCURACY.margin:
        return Verdict(2, claim, "supported", f"no design recalls {ACCURACY.fmt(ACCURACY.margin, False)} better than "
                       f"{chosen} on any setting ({n} Bonferroni-corrected comparisons)", evidence)  # fmt: skip
    return Verdict(2, claim, "inconclusive", f"no design is significantly better than {chosen}, but a lead of "
                   f"{ACCURACY.fmt(ACCURACY.margin, False)} or more is not excluded ({n} comparisons)", evidence)  # fmt: skip


def _difference(setting: Setting, a: Design, b: Design, level: float) -> tuple[float, float]:
    """Mean gain of a minus b, and the half-width of its interval at ``level`` from the setting's pooled seed sd."""
    sd, df = setting.pooled_sd()
    se = sd * math.sqrt(1 / len(a.gains) + 1 / len(b.gains))
    return a.gain - b.gain, float(sps.t.ppf(level, df)) * se


def _separates(setting: Setting, level: float) -> bool:
    """The setting's best and worst designs differ by at least M, significantly at ``level`` (pooled seed sd)."""
    best, worst = max(setting.designs, key=lambda d: d.gain), min(setting.designs, key=lambda d: d.gain)
    if setting.pooled_sd()[1] == 0 or best.gain - worst.gain < ACCURACY.margin:
        return False
    diff, half = _difference(setting, best, worst, level)
    return diff - half > 0


@dataclasses.dataclass
class RangeAnalysis:
    verdicts: list[Verdict]
    bests: list[BestDecay]
    lm: list[Setting]
    recall: list[Setting]
    figures: dict[str, Path] = dataclasses.field(default_factory=dict)  # kind -> PNG (range_plots.range_figures)


def analyse(data: SweepData) -> RangeAnalysis | None:
    """The decay-range section of a report (its verdicts and best decays; the figures are range_plots'), or None
    for a sweep without such a grid."""
    lm, recall = range_settings(data)
    if not lm and not recall:
        return None
    rng = np.random.default_rng(RNG_SEED)
    context, bests = question_context(lm, rng)
    return RangeAnalysis([context, question_recall(lm, recall)], bests, lm, recall)
