"""Sweep specs: loading, grid expansion (deterministic ids and order), budgets and clear errors."""

from __future__ import annotations

import textwrap

import pytest
from fake_backend import resolve

from decaylab.sweep.spec import expand, find_spec, load_spec, preset_names, run_id_of, spec_from_dict

SPEC = """
name = "demo"
base = "fake"
seeds = [0, 1]
[budget]
max_steps = 7
[overrides]
"train.lr" = 0.002
[studies]
param = "A. Parameterization"
gran = "C. Granularity"
[[points]]
study = "param"
label = "Base"
[[points]]
study = "param"
label = "SD-{model.decay.p}"
axes = { "model.decay.p" = [0.8, 0.9] }
[[points]]
study = "gran"
label = "Base"
[[points]]
study = "gran"
label = "Scalar"
[points.set.model.decay]
granularity = "scalar"
"""


def write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_is_deterministic_and_dedupes_shared_configs(tmp_path):
    path = write(tmp_path, SPEC)
    first = expand(load_spec(path), resolve)
    second = expand(load_spec(path), resolve)
    assert [r.run_id for r in first] == [r.run_id for r in second]
    assert [r.config for r in first] == [r.config for r in second]
    # 4 distinct configs per seed: Base (in both studies), SD-0.8, SD-0.9, Scalar; seed-major order.
    assert len(first) == 8
    assert [r.memberships[0].seed for r in first] == [0] * 4 + [1] * 4
    base = first[0]
    assert {(m.study, m.label) for m in base.memberships} == {("param", "Base"), ("gran", "Base")}
    labels = [m.label for r in first[:4] for m in r.memberships]
    assert labels == ["Base", "Base", "SD-0.8", "SD-0.9", "Scalar"]  # file order
    assert len({r.run_id for r in first}) == 8
    # precedence: spec overrides, budget, point settings, seed
    scalar = first[3].config
    assert scalar["train"]["max_steps"] == 7 and scalar["train"]["lr"] == 0.002
    assert scalar["model"]["decay"]["granularity"] == "scalar" and first[7].config["train"]["seed"] == 1
    assert first[1].config["model"]["decay"]["p"] == 0.8


def test_run_id_depends_only_on_config():
    a = {"model": {"x": 1}, "train": {"seed": 0}}
    assert run_id_of(a) == run_id_of({"train": {"seed": 0}, "model": {"x": 1}})  # key order does not matter
    assert run_id_of(a) != run_id_of({"model": {"x": 2}, "train": {"seed": 0}})
    assert len(run_id_of(a)) == 12


def test_cli_overrides_apply_to_every_point_and_change_ids(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    plain = expand(spec, resolve)
    smoke = expand(spec, resolve, {"train.max_steps": "2"})
    assert all(r.config["train"]["max_steps"] == 2 for r in smoke)
    assert not {r.run_id for r in plain} & {r.run_id for r in smoke}


def test_token_budget_becomes_steps(tmp_path):
    spec = load_spec(write(tmp_path, SPEC.replace("max_steps = 7", "tokens = 100")))
    # fake preset: batch 2 x seq 8 = 16 tokens per step -> ceil(100 / 16) = 7
    assert {r.config["train"]["max_steps"] for r in expand(spec, resolve)} == {7}


# Two contexts: "short" keeps the spec's settings, "long" (the table form) sets its own length, steps and lr.
STUDY_SPEC = """
name = "contexts"
base = "fake"
seeds = [0]
[budget]
max_steps = 7
[overrides]
"train.lr" = 0.002
"train.seq_len" = 16
[studies]
short = "A. Short context"
[studies.long]
title = "B. Long context"
set = { "train.seq_len" = 64, "train.max_steps" = 3, "train.lr" = 0.003 }
[[points]]
study = ["short", "long"]
label = "SD-{model.decay.p}"
axes = { "model.decay.p" = [0.8, 0.9] }
[[points]]
study = "long"
label = "Low lr"
set = { "train.lr" = 0.001 }
"""


def configs_by_row(runs):
    return {(m.study, m.label): r.config for r in runs for m in r.memberships}


def test_study_set_wins_over_overrides_and_budget_but_not_over_point_set_or_cli(tmp_path):
    spec = load_spec(write(tmp_path, STUDY_SPEC))
    rows = configs_by_row(expand(spec, resolve))
    short, long = rows[("short", "SD-0.8")]["train"], rows[("long", "SD-0.8")]["train"]
    assert (short["seq_len"], short["max_steps"], short["lr"]) == (16, 7, 0.002)  # no study set: as before
    assert (long["seq_len"], long["max_steps"], long["lr"]) == (64, 3, 0.003)  # over [overrides] and [budget]
    assert rows[("long", "Low lr")]["train"]["lr"] == 0.001  # the point's set wins over the study's
    assert rows[("long", "Low lr")]["train"]["seq_len"] == 64
    cli = configs_by_row(expand(spec, resolve, {"train.seq_len": 32}))
    assert {c["train"]["seq_len"] for c in cli.values()} == {32}  # --set wins over everything


def test_study_set_is_part_of_the_run_id(tmp_path):
    with_set = expand(load_spec(write(tmp_path, STUDY_SPEC)), resolve)
    assert len(with_set) == 5  # the same grid point in two studies with different settings: two runs
    no_set = STUDY_SPEC.replace('set = { "train.seq_len" = 64, "train.max_steps" = 3, "train.lr" = 0.003 }\n', "")
    without = expand(load_spec(write(tmp_path, no_set, "no_set.toml")), resolve)
    shared = [r for r in without if len(r.memberships) == 2]  # identical configs: trained once, in both tables
    assert [{(m.study, m.label) for m in r.memberships} for r in shared] == [
        {("short", "SD-0.8"), ("long", "SD-0.8")},
        {("short", "SD-0.9"), ("long", "SD-0.9")},
    ]
    long_ids = {r.run_id for r in with_set if r.memberships[0].study == "long"}
    assert len(long_ids) == 3 and not long_ids & {r.run_id for r in without}


def test_token_budget_uses_the_study_length(tmp_path):
    text = STUDY_SPEC.replace("max_steps = 7", "tokens = 1024").replace('"train.max_steps" = 3, ', "")
    rows = configs_by_row(expand(load_spec(write(tmp_path, text)), resolve))
    # batch 2: 1024 / (2 x 16) = 32 steps at the spec's length, 1024 / (2 x 64) = 8 at the long study's
    assert rows[("short", "SD-0.8")]["train"]["max_steps"] == 32
    assert rows[("long", "SD-0.8")]["train"]["max_steps"] == 8


def test_string_and_table_study_forms_mix(tmp_path):
    text = STUDY_SPEC + '[studies.extra]\nset = { "train.lr" = 0.1 }\n'  # a table without a title: its name
    spec = load_spec(write(tmp_path, text))
    assert spec.studies == (("short", "A. Short context"), ("long", "B. Long context"), ("extra", "extra"))
    assert spec.study_sets == (
        ("long", (("train.seq_len", 64), ("train.max_steps", 3), ("train.lr", 0.003))),
        ("extra", (("train.lr", 0.1),)),
    )
    assert spec.study_set("short") == {} and spec.study_set("extra") == {"train.lr": 0.1}
    assert hash(spec) == hash(load_spec(write(tmp_path, text, "again.toml")))  # hashable, like every field
    assert spec.study_order() == [("short", "A. Short context"), ("long", "B. Long context")]  # extra has no points


def test_list_study_point_expands_into_each_study_in_order_with_its_grid(tmp_path):
    spec = load_spec(write(tmp_path, STUDY_SPEC))
    assert [(p.study, p.label) for p in spec.points] == [
        ("short", "SD-0.8"), ("short", "SD-0.9"), ("long", "SD-0.8"), ("long", "SD-0.9"), ("long", "Low lr"),
    ]  # fmt: skip
    runs = expand(spec, resolve)
    assert [m.point_index for r in runs for m in r.memberships] == [0, 1, 2, 3, 4]


def test_select_studies_keeps_study_sets(tmp_path):
    spec = load_spec(write(tmp_path, STUDY_SPEC))
    only = expand(spec.select_studies(["long"]), resolve)
    assert {r.config["train"]["seq_len"] for r in only} == {64}
    assert {r.run_id for r in only} <= {r.run_id for r in expand(spec, resolve)}


def test_report_reads_name_title_pairs_of_table_studies(tmp_path):
    from fake_backend import BACKEND

    from decaylab.report.data import load_sweep
    from decaylab.sweep.sweepdir import prepare_sweep

    spec = load_spec(write(tmp_path, STUDY_SPEC))
    out = tmp_path / "sweep"
    out.mkdir()
    prepare_sweep(spec, out, None, BACKEND).db.close()
    assert load_sweep(out).studies == [("short", "A. Short context"), ("long", "B. Long context")]


def test_bad_key_in_a_study_set_is_reported_with_the_study(tmp_path):
    spec = load_spec(write(tmp_path, STUDY_SPEC.replace('{ "train.seq_len" = 64', '{ "train.seq_lenn" = 64')))
    message = r"^\[studies.long\] set \(applied to point 'SD-0.8'\): unknown setting 'train.seq_lenn'.*'seq_len'"
    with pytest.raises(ValueError, match=message):
        expand(spec, resolve)


def test_select_studies_keeps_ids(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    full = {r.run_id for r in expand(spec, resolve)}
    only = expand(spec.select_studies(["gran"]), resolve)
    assert len(only) == 4 and {r.run_id for r in only} <= full
    with pytest.raises(ValueError, match="Did you mean 'gran'"):
        spec.select_studies(["grna"])


def test_malformed_toml_names_the_line(tmp_path):
    path = write(tmp_path, 'name = "x"\nbase = fake\nseeds = [0]\n')
    with pytest.raises(ValueError, match=r"spec.toml: invalid TOML.*line 2"):
        load_spec(path)


def test_unknown_preset_suggests_closest():
    assert "quick" in preset_names() and "paper" in preset_names()
    with pytest.raises(ValueError, match="Did you mean 'quick'"):
        find_spec("quik")
    with pytest.raises(FileNotFoundError):
        find_spec("missing/spec.toml")


def test_unknown_override_key_is_reported_with_the_point(tmp_path):
    spec = load_spec(write(tmp_path, SPEC.replace('"train.lr" = 0.002', '"train.lrr" = 0.002')))
    with pytest.raises(ValueError, match=r"point 'Base'.*train.lrr.*Did you mean 'lr'"):
        expand(spec, resolve)


def test_a_bad_command_line_override_is_blamed_on_set_not_on_a_point(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    with pytest.raises(ValueError, match=r"^--set: unknown setting 'train.max_stepz'.*Did you mean 'max_steps'"):
        expand(spec, resolve, {"train.max_stepz": 5})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "base": "fake", "pointz": []}, "unknown key 'pointz'.*Did you mean 'points'"),
        ({"name": "x", "base": "fake"}, "has no points"),
        ({"name": "x", "base": "fake", "points": [{"study": "a", "label": "L"}] * 2}, "appears twice"),
        ({"name": "x", "base": "fake", "seeds": "0", "points": [{"study": "a", "label": "L"}]}, "list of integers"),
        ({"name": "x", "base": "fake", "budget": {"max_steps": 1, "tokens": 2},
          "points": [{"study": "a", "label": "L"}]}, "not both"),  # fmt: skip
        ({"name": "x", "base": "fake", "points": [{"study": "a", "label": "{model.p}", "axes": {"model.q": [1]}}]},
         "not an axis"),  # fmt: skip
        ({"name": "x", "base": "fake", "points": [{"study": "a", "label": "SD-{model.decay.p}", "axes": {
            "model.decay.p": [0.8, 0.9], "train.sed": [0, 1]}}]}, "does not name the axis 'train.sed'"),  # fmt: skip
        ({"name": "x", "base": "fake", "studies": {"a": "A"}, "points": [{"study": "b", "label": "L"}]},
         "does not list"),  # fmt: skip
        ({"name": "x", "base": "fake", "workers": 0, "points": [{"study": "a", "label": "L"}]}, "workers=0"),
        ({"name": "x", "base": "fake", "workers": "2", "points": [{"study": "a", "label": "L"}]}, "positive integer"),
        ({"name": "x", "base": "fake", "evaluation": {"precision": "fp16"}, "points": [{"study": "a", "label": "L"}]},
         "precision='fp16': choose from fp32, bf16"),  # fmt: skip
        ({"name": "x", "base": "fake", "studies": {"a": {"title": "A", "sett": {}}},
          "points": [{"study": "a", "label": "L"}]},
         r"\[studies.a\]: unknown key 'sett'.*Did you mean 'set'.*Allowed: set, title"),  # fmt: skip
        ({"name": "x", "base": "fake", "studies": {"a": {"set": "train.lr=1"}},
          "points": [{"study": "a", "label": "L"}]},
         r"\[studies.a\]: set='train.lr=1': expected a table"),  # fmt: skip
        ({"name": "x", "base": "fake", "studies": {"a": "A"}, "points": [{"study": [], "label": "L"}]},
         r"study = \[\] names no study"),  # fmt: skip
        ({"name": "x", "base": "fake", "studies": {"a": "A"}, "points": [{"study": ["a", "b"], "label": "L"}]},
         r"belongs to study 'b', which \[studies\] does not list"),  # fmt: skip
    ],
    ids=["unknown-key", "no-points", "duplicate-label", "bad-seeds", "two-budgets", "bad-template", "unnamed-axis",
         "unlisted-study",
         "zero-workers", "string-workers", "eval-precision",
         "study-table-key", "study-set-not-table", "empty-study-list", "unlisted-study-in-list"],  # fmt: skip
)
def test_bad_specs_raise_clear_errors(data, message):
    with pytest.raises(ValueError, match=message):
        spec_from_dict(data)


def test_shipped_presets_parse():
    for name in preset_names():
        spec = load_spec(name)
        assert spec.points and spec.study_order()


@pytest.mark.parametrize("name", ["recall", "paper"])
def test_presets_resolve_against_the_real_run_config(name):
    from decaylab.sweep.backend import resolve_run_config

    runs = expand(load_spec(name), resolve_run_config)
    spec = load_spec(name)
    assert {m.label for r in runs for m in r.memberships} == {p.label for p in spec.points}
    softmax = [r for r in runs if r.config["model"]["mixer"] == "softmax" and r.config["model"]["pos"] == "rope"]
    studies = {m.study for r in softmax for m in r.memberships}
    assert studies == {s for s, _ in spec.study_order()}  # the softmax baseline is a row of every table
    assert len(softmax) == len(spec.seeds)  # ... and trained once per seed


def test_spec_workers_is_the_default_worker_count(tmp_path):
    from decaylab.commands.sweep import default_workers

    spec = load_spec(write(tmp_path, "workers = 3\n" + SPEC))
    assert spec.workers == 3
    assert default_workers(spec, []) == 3
    assert default_workers(spec, ["cuda:0", "cuda:1"]) == 2  # one worker per device wins over the spec
    assert default_workers(load_spec(write(tmp_path, SPEC, "plain.toml")), []) == 1


def test_recall_preset_is_a_recall_study_with_two_workers():
    from decaylab.sweep.backend import resolve_run_config

    spec = load_spec("recall")
    assert spec.workers == 2 and len(spec.seeds) >= 2
    runs = expand(spec, resolve_run_config)
    assert {r.config["data"]["corpus"] for r in runs} == {"mqar"}
    kinds = {r.config["model"]["decay"]["kind"] for r in runs if r.config["model"]["mixer"] == "linear"}
    assert "mamba2_no_dt" in kinds and "simple" in kinds  # a decay that forgets at once vs a slow one


def test_quick_preset_asks_findings_one_and_two_on_ptb():
    from decaylab.sweep.backend import resolve_run_config

    spec = load_spec("quick")
    assert spec.workers == 2
    runs = expand(spec, resolve_run_config)
    assert {r.config["data"]["corpus"] for r in runs} == {"ptb"}
    rows = {m.label: r.config for r in runs for m in r.memberships if m.study == "parameterization"}
    # finding 1 is a rank correlation over rows: five decay ranges give p = 1/60 at the most
    assert len({c["model"]["decay"]["p"] for c in rows.values()}) >= 5
    shared = [r for r in runs if r.config["model"]["decay"]["share"]]
    twins = {(r.config["model"]["decay"]["p"], r.config["model"]["decay"]["kind"]) for r in runs
             if not r.config["model"]["decay"]["share"]}  # fmt: skip
    assert len(shared) >= 3 and all((r.config["model"]["decay"]["p"], "simple") in twins for r in shared)
