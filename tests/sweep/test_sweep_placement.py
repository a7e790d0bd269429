"""Worker slots of a local sweep: the automatic workers-per-card rule on made-up numbers, --devices expansion, and
the command wired to them (the CUDA query replaced: there is no GPU here)."""

from __future__ import annotations

import re
import textwrap

import pytest
from fake_backend import BACKEND

from decaylab.cli import main
from decaylab.sweep import placement
from decaylab.sweep.db import ResultsDB
from decaylab.sweep.placement import (
    CONTEXT_BYTES,
    GiB,
    choose_workers,
    config_run_bytes,
    largest_run_bytes,
    run_memory_bytes,
    worker_bytes,
    worker_devices,
)

# ---------------------------------------------------------------- the rule


def test_cpu_bound_card():
    choice = choose_workers("cuda:0", cores=4, cards=1, free_bytes=80 * GiB, run_bytes=GiB)
    assert (choice.workers, choice.cpu_cap, choice.memory_cap, choice.hard_cap) == (4, 4, 72, 12)


def test_memory_bound_card():
    choice = choose_workers("cuda:0", cores=64, cards=1, free_bytes=10 * GiB, run_bytes=2 * GiB)
    assert (choice.workers, choice.cpu_cap, choice.memory_cap) == (4, 64, 4)  # floor(0.9 * 10 / 2)


def test_hard_capped_card_and_its_line():
    choice = choose_workers("cuda:0", cores=16, cards=1, free_bytes=80 * GiB, run_bytes=GiB)
    assert choice.workers == 12
    assert choice.describe() == ("cuda:0: 12 workers (cpu cap 16, memory cap 72 at ~1.0 GiB a worker, hard cap 12; "
                                 "override with --workers-per-device N)")  # fmt: skip


def test_a_worker_of_several_runs_holds_one_context_and_every_run():
    run = CONTEXT_BYTES + 3 * GiB
    assert worker_bytes(run, 1) == run
    assert worker_bytes(run, 4) == CONTEXT_BYTES + 12 * GiB


def test_workers_of_several_runs_stop_at_the_runs_a_card_takes_at_once():
    run = worker_bytes(CONTEXT_BYTES + GiB // 4, 8)  # eight ptb-small-like runs a worker: about 2.6 GiB
    choice = choose_workers("cuda:0", cores=16, cards=1, free_bytes=79 * GiB, run_bytes=run, runs_per_worker=8)
    assert (choice.workers, choice.flight_cap, choice.hard_cap) == (4, 4, 12)  # 32 runs in flight, as measured
    assert "flight cap 4, hard cap 12" in choice.describe()
    assert choose_workers("cuda:0", 16, 1, 79 * GiB, run, runs_per_worker=3).workers == 11  # ceil(32 / 3)
    assert choose_workers("cuda:0", 16, 1, 79 * GiB, run, runs_per_worker=64).workers == 1
    one = choose_workers("cuda:0", 16, 1, 79 * GiB, GiB)  # a run a worker: the hard cap, and no word of the other
    assert (one.workers, one.flight_cap) == (12, 32) and "flight" not in one.describe()


def test_at_least_one_worker():
    assert choose_workers("cuda:0", cores=1, cards=2, free_bytes=80 * GiB, run_bytes=GiB).workers == 1  # cpu cap 0
    tight = choose_workers("cuda:0", cores=16, cards=1, free_bytes=GiB, run_bytes=2 * GiB)
    assert (tight.workers, tight.memory_cap) == (1, 0)
    assert "1 worker (" in tight.describe()


def test_two_cards_split_the_cores():
    choices = [choose_workers(c, cores=16, cards=2, free_bytes=80 * GiB, run_bytes=GiB) for c in ("cuda:0", "cuda:1")]
    assert [(c.workers, c.cpu_cap) for c in choices] == [(8, 8), (8, 8)]


# ---------------------------------------------------------------- the per-run estimate


def test_run_memory_bytes_terms():
    base = run_memory_bytes(params=0, tokens=0, d_model=64, n_layers=2, vocab=100)
    assert base == CONTEXT_BYTES == int(0.6 * GiB)
    assert run_memory_bytes(1000, 0, 64, 2, 100) - base == 16_000  # fp32 weights, grads and two AdamW moments
    # 10 tokens: 10 * (64 * 2 * 160 activation bytes + 100 * 10 logit bytes)
    assert run_memory_bytes(0, 10, 64, 2, 100) - base == 10 * (64 * 2 * 160 + 100 * 10)


def _tiny(**train) -> dict:
    from decaylab.sweep.backend import resolve_run_config

    return resolve_run_config("tiny", {f"train.{k}": v for k, v in train.items()})


def test_config_run_bytes_counts_the_models_parameters_and_its_micro_batch():
    from decaylab.config import from_dict
    from decaylab.model.lm import DecayLM
    from decaylab.run.config import RunConfig

    config = _tiny(batch_size=16, seq_len=64, grad_accum=2)
    cfg = from_dict(RunConfig, config)
    params = DecayLM(cfg.model).num_params()
    expected = run_memory_bytes(params, 8 * 64, cfg.model.d_model, cfg.model.n_layers, cfg.model.vocab_size)
    assert config_run_bytes(config) == expected
    assert config_run_bytes(_tiny(batch_size=16, seq_len=64, grad_accum=1)) > expected  # twice the micro-batch


def test_largest_run_bytes_takes_the_biggest_point():
    small, big = _tiny(seq_len=32), _tiny(seq_len=256)
    seeds = [_tiny(seq_len=32, seed=s) for s in range(3)]
    assert largest_run_bytes([small, big, *seeds]) == config_run_bytes(big) > config_run_bytes(small)


def test_ptb_small_estimate_leaves_room_for_the_hard_cap_on_an_80gb_card():
    from decaylab.sweep.backend import resolve_run_config

    estimate = config_run_bytes(resolve_run_config("ptb-small", {}))
    assert GiB < estimate < 2 * GiB  # 0.6 GiB context, 8.7M params, 16 x 128 tokens of a 4-layer d 256 model
    assert choose_workers("cuda:0", 16, 1, 79 * GiB, estimate).workers == 12


# ---------------------------------------------------------------- --devices -> worker slots


def _never(cards):
    raise AssertionError(f"no automatic count expected, asked for {cards}")


def test_a_card_named_once_gets_the_automatic_count():
    asked = []

    def automatic(cards):
        asked.append(cards)
        return {"cuda:0": 3}

    assert worker_devices(["cuda:0"], None, None, automatic) == ["cuda:0"] * 3
    assert asked == [["cuda:0"]]


def test_slots_go_round_the_cards():
    slots = worker_devices(["cuda:0", "cuda:1"], None, None, lambda cards: {"cuda:0": 2, "cuda:1": 3})
    assert slots == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:1"]


def test_repeated_devices_and_cpus_are_one_worker_per_entry():
    assert worker_devices(["cuda:0", "cuda:0"], None, None, _never) == ["cuda:0", "cuda:0"]
    assert worker_devices(["cuda", "cuda:0"], None, None, _never) == ["cuda", "cuda:0"]  # both are card 0
    assert worker_devices(["cpu"], None, None, _never) == ["cpu"]
    assert worker_devices(["cpu", "cpu"], None, None, _never) == ["cpu", "cpu"]
    assert worker_devices(["cpu", "cuda:0"], None, None, lambda cards: {"cuda:0": 2}) == ["cpu", "cuda:0", "cuda:0"]
    assert worker_devices([], None, None, _never) == []
    assert worker_devices([], None, 3, _never) == []  # --workers alone: no devices pinned


def test_workers_per_device_overrides_the_automatic_count():
    assert worker_devices(["cuda:0"], 3, None, _never) == ["cuda:0"] * 3
    assert worker_devices(["cuda:0", "cuda:1"], 2, None, _never) == ["cuda:0", "cuda:1"] * 2
    assert worker_devices(["cuda:0", "cpu"], 2, None, _never) == ["cuda:0", "cpu", "cuda:0"]


def test_workers_with_devices_keeps_its_meaning():
    """--workers N with --devices: the first N slots, one per listed entry, no automatic count."""
    assert worker_devices(["cuda:0", "cuda:1"], None, 2, _never) == ["cuda:0", "cuda:1"]
    assert worker_devices(["cuda:0", "cuda:1"], None, 1, _never) == ["cuda:0"]
    assert worker_devices(["cuda:0", "cuda:1"], 3, 4, _never) == ["cuda:0", "cuda:1"] * 2
    with pytest.raises(
        ValueError, match="--workers 3 exceeds the 1 worker slot.*--devices cuda:0 --workers-per-device 3"
    ):
        worker_devices(["cuda:0"], None, 3, _never)
    with pytest.raises(ValueError, match="--workers 7 exceeds the 6 .* raise --workers-per-device \\(now 3\\)"):
        worker_devices(["cuda:0", "cuda:1"], 3, 7, _never)
    with pytest.raises(ValueError, match="list the device once per worker: --devices cpu,cpu"):
        worker_devices(["cpu"], None, 2, _never)


@pytest.mark.parametrize(
    "devices, message",
    [
        ([], "needs the cards: add --devices cuda:0"),
        (["cpu"], "names none; list a device once per worker instead: --devices cpu,cpu"),
        (["cuda:0", "cuda:0"], "name each card once \\(e.g. --devices cuda:0 --workers-per-device 2\\)"),
    ],
)
def test_workers_per_device_where_it_means_nothing(devices, message):
    with pytest.raises(ValueError, match=message):
        worker_devices(devices, 2, None, _never)


# ---------------------------------------------------------------- the CUDA query (a stand-in child process)


def test_free_memory_asks_a_child_that_sees_only_the_named_cards(monkeypatch):
    monkeypatch.setattr(placement, "_QUERY", "import os; print(*(int(i) * 1000 + 7 for i in "
                                             "os.environ['CUDA_VISIBLE_DEVICES'].split(',')))")  # fmt: skip
    assert placement.free_memory(["cuda:1", "cuda:3"]) == {"cuda:1": 1007, "cuda:3": 3007}
    assert placement.free_memory(["cuda"]) == {"cuda": 7}


def test_free_memory_errors_name_the_fix(monkeypatch):
    monkeypatch.setattr(placement, "_QUERY", "import sys; sys.exit('no CUDA driver found')")
    with pytest.raises(ValueError, match="no CUDA driver found.*give --workers-per-device N"):
        placement.free_memory(["cuda:0"])
    monkeypatch.setattr(placement, "_QUERY", "print(5)")
    with pytest.raises(ValueError, match="names 2 CUDA card\\(s\\) but 1 can be used here"):
        placement.free_memory(["cuda:0", "cuda:1"])


def test_the_real_query_finds_no_card_on_a_machine_without_one():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA card")
    with pytest.raises(ValueError, match="names 1 CUDA card\\(s\\) but 0 can be used here"):
        placement.free_memory(["cuda:0"])


# ---------------------------------------------------------------- the command

SPEC = """
name = "pair"
base = "{base}"
seeds = [0, 1]
[studies]
s = "S"
[[points]]
study = "s"
label = "SD"
"""


def _spec(tmp_path, base):
    path = tmp_path / f"{base}.toml"
    path.write_text(textwrap.dedent(SPEC.format(base=base)))
    return str(path)


@pytest.fixture
def sixteen_cores_80gb(monkeypatch):
    monkeypatch.setattr(placement, "available_cores", lambda: 16)
    monkeypatch.setattr(placement, "free_memory", lambda cards: dict.fromkeys(cards, 79 * GiB))


@pytest.fixture
def captured(monkeypatch):
    calls = []

    def fake_run_sweep(spec, out, **kwargs):
        calls.append(kwargs)
        raise SystemExit(0)  # stop before training: only the worker slots are under test

    monkeypatch.setattr("decaylab.commands.sweep.run_sweep", fake_run_sweep)
    return calls


def test_command_picks_the_workers_of_a_card_named_once(tmp_path, sixteen_cores_80gb, captured, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", _spec(tmp_path, "tiny"), "--out", str(tmp_path / "out"), "--devices", "cuda:0"])
    assert captured[0]["workers"] == 12 and captured[0]["devices"] == ["cuda:0"] * 12
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("cuda:0: 12 workers (cpu cap 16, memory cap ")
    assert line.endswith("hard cap 12; override with --workers-per-device N)")


@pytest.mark.parametrize(
    "flags, workers, devices",
    [
        (["--devices", "cuda:0,cuda:1"], 16, ["cuda:0", "cuda:1"] * 8),  # 16 cores split over two cards
        (["--devices", "cuda:0", "--workers-per-device", "3"], 3, ["cuda:0"] * 3),
        (["--devices", "cuda:0", "--workers-per-device", "auto"], 12, ["cuda:0"] * 12),
        (["--devices", "cuda:0,cuda:0,cuda:0"], 3, ["cuda:0"] * 3),
        (["--devices", "cuda:0,cuda:1", "--workers", "1"], 1, ["cuda:0"]),
    ],
)
def test_command_worker_slots(tmp_path, sixteen_cores_80gb, captured, flags, workers, devices):
    with pytest.raises(SystemExit):
        main(["sweep", _spec(tmp_path, "tiny"), "--out", str(tmp_path / "out"), *flags])
    assert captured[0]["workers"] == workers and captured[0]["devices"] == devices


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers-per-device", "0"], "whole number of workers per card \\(1 or more\\), or auto"),
        (["--workers-per-device", "many"], "whole number of workers per card"),
        (["--devices", "cuda:0", "--workers", "4"], "--devices cuda:0 --workers-per-device 4"),
        (["--workers-per-device", "2"], "needs the cards: add --devices cuda:0"),
        (["--workers-per-device", "2", "--launcher", "slurm"], "--workers-per-device is for --launcher local"),
    ],
)
def test_command_refuses_bad_worker_settings(tmp_path, captured, capsys, flags, message):
    argv = ["sweep", _spec(tmp_path, "tiny"), "--out", str(tmp_path / "out"), *flags]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not captured and not (tmp_path / "out").exists()


def test_cpu_sweep_runs_end_to_end_through_the_command(tmp_path, monkeypatch, capsys):
    """--devices cpu,cpu: two workers pinned to the CPU, the fake backend's points trained and recorded."""
    monkeypatch.setattr("decaylab.sweep.runner.default_backend", lambda stack_seeds=False: BACKEND)
    assert main(["sweep", _spec(tmp_path, "fake"), "--out", str(tmp_path / "out"), "--devices", "cpu,cpu"]) == 0
    out = capsys.readouterr().out
    assert "2 to run with 2 worker(s)" in out and out.count(" on cpu") == 2
    with ResultsDB(tmp_path / "out" / "results.sqlite") as db:
        assert [r["status"] for r in db.runs()] == ["finished", "finished"]
