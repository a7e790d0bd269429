"""`decaylab eval` flags and the printed summary."""

from __future__ import annotations

import pytest

from decaylab.cli import build_parser
from decaylab.commands.evaluate import summary_lines


def _eval_parser():
    return build_parser()._subparsers._group_actions[0].choices["eval"]


def test_every_flag_has_help_and_lists_parse():
    parser = _eval_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help text"
    args = parser.parse_args(["RUN", "--extrapolation", "1,4", "--splits", "test", "--max-tokens", "100"])
    assert args.extrapolation == (1, 4) and args.splits == ("test",) and args.max_tokens == 100
    assert parser.parse_args(["RUN", "--extrapolation", "none"]).extrapolation == ()
    for bad in (["--extrapolation", "0,2"], ["--decay-tokens", "0"], ["--splits", "valid,dev"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["RUN", *bad])


def test_summary_word_level_and_infinite_half_life():
    result = {
        "model_source": "model", "seq_len": 256, "word_level": True, "val_loss": 4.9, "val_ppl": 134.3,
        "extrapolation": {"1": 134.3, "8": None}, "extrapolation_context": {"1": 256, "8": 2048},
        "decay_stats": [
            {"layer": 1, "median": 0.95, "p25": 0.9, "p75": 0.99},
            {"layer": 2, "median": 1.0, "p25": 1.0, "p75": 1.0},
            {"layer": "all", "median": 1.0, "p25": 0.92, "p75": 1.0, "half_life_tokens": None},
        ],
    }
    text = "\n".join(summary_lines(result, "runs/x"))
    assert "word ppl 134.30" in text and "bits/byte" not in text
    assert "8x (2048) n/a" in text and "0.950 1.000" in text and "half-life infinite" in text


def test_summary_mqar_and_softmax():
    result = {"model_source": "checkpoints/step-5", "seq_len": 64, "mqar_accuracy": 0.25, "mqar_split": "test",
              "decay_stats": []}
    text = "\n".join(summary_lines(result, "runs/m"))
    assert "checkpoints/step-5" in text and "MQAR accuracy (test): 0.2500" in text and "no decay" in text
