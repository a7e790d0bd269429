"""Resources of one launched task: [slurm] table and --slurm options, and the check that every point fits."""

from __future__ import annotations

import pytest

from decaylab.sweep.backend import resolve_run_config
from decaylab.sweep.resources import SlurmOptions, check_fits, parse_time, slurm_options
from decaylab.sweep.spec import expand, load_spec, spec_from_dict


def test_time_limits_in_slurm_formats():
    assert [parse_time(v) for v in (90, "90", "1:30", "1:30:00", "1:30:01", "2-00:00:00", "1-12")] == [
        90, 90, 90, 90, 91, 2880, 2160,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="H:MM:SS"):
        parse_time("two hours")


def test_cli_options_override_the_spec_table_and_are_typed():
    options = slurm_options({"partition": "cpu", "gpus": 1, "time": "1:00:00"}, ["partition=gpu", "gpus=8",
                                                                                 "mem_gb=64", "max_running=16"])
    assert options == SlurmOptions(partition="gpu", gpus=8, mem_gb=64.0, time=60, max_running=16)
    assert options.processes == 8 and SlurmOptions().processes == 1


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="unknown key 'partiton'. Did you mean 'partition'"):
        slurm_options({}, ["partiton=gpu"])
    with pytest.raises(ValueError, match=r"\[slurm\]: unknown key 'gpu'. Did you mean 'gpus'"):
        spec_from_dict({"name": "t", "base": "tiny", "slurm": {"gpu": 2}, "points": [{"study": "a", "label": "x"}]})
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        slurm_options({}, ["gpus"])
    with pytest.raises(ValueError, match="expected a number"):
        slurm_options({}, ["gpus=all"])
    with pytest.raises(ValueError, match="at least 1"):
        slurm_options({}, ["max_running=0"])


def test_points_that_cannot_run_on_the_requested_resources_are_refused():
    gpu_only = spec_from_dict({"name": "big", "base": "160m-fineweb", "points": [{"study": "a", "label": "GLA",
                                                                                  "set": {"model.decay.kind": "gla"}}]})
    plan = expand(gpu_only, resolve_run_config)
    with pytest.raises(ValueError, match=r"a/GLA .* sets train.device=cuda but no GPU is requested: add --slurm gpus"):
        check_fits(plan, SlurmOptions(), torchrun_ok=True)
    check_fits(plan, SlurmOptions(gpus=8), torchrun_ok=True)  # 256 sequences split over 8 processes
    with pytest.raises(ValueError, match="does not split over 6 processes"):
        check_fits(plan, SlurmOptions(gpus=6), torchrun_ok=True)
    with pytest.raises(ValueError, match="only decaylab's own trainer"):
        check_fits(plan, SlurmOptions(gpus=8), torchrun_ok=False)
    fsdp = expand(gpu_only, resolve_run_config, {"train.fsdp": True})
    with pytest.raises(ValueError, match="train.fsdp=true, which needs several processes"):
        check_fits(fsdp, SlurmOptions(gpus=1), torchrun_ok=True)
    check_fits(expand(load_spec("quick"), resolve_run_config), SlurmOptions(), torchrun_ok=True)  # CPU points fit
