"""``decaylab train``: resolve a run configuration, train into a run directory, then evaluate it.

    decaylab train --preset tiny --out runs/tiny
    decaylab train --preset ptb-small --set model.decay.kind=simple --out runs/ptb-simple
    decaylab train --resume --out runs/ptb-simple                 # after a crash or kill -9
    decaylab train --resume --out runs/ptb-simple --set train.max_steps=3000   # train a finished run longer
    torchrun --nproc-per-node 2 -m decaylab train --preset tiny --out runs/tiny-ddp
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from decaylab.commands.args import add_set_argument
from decaylab.config import parse_set_args, to_dict
from decaylab.rundir import EVAL


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", metavar="NAME", help="run preset to start from (tiny, ptb-small, mqar, 160m-fineweb, ...; "
        "see --list-presets)"
    )
    parser.add_argument(
        "--config", metavar="FILE", help="a .json or .toml file with [model]/[train]/[data] tables (and optionally "
        "preset = NAME); applied on top of --preset"
    )
    add_set_argument(
        parser, "override one setting by its dotted key, e.g. --set train.max_steps=200 --set model.decay.kind=gla "
        "(repeatable; applied last)",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory to create (default: runs/<preset or config name>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint, with its "
        "stored configuration; --set may change only how long it trains and what it logs (e.g. train.max_steps)"
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation (val/test ppl) after training")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration as JSON and exit"
    )
    parser.add_argument("--list-presets", action="store_true", help="list the run presets and exit")


def _default_out(args: argparse.Namespace) -> Path:
    if args.preset:
        return Path("runs") / args.preset
    if args.config:
        return Path("runs") / Path(args.config).stem
    raise ValueError("give --out DIR (or --preset NAME, whose run goes to runs/NAME by default)")


def _config(args: argparse.Namespace, overrides: dict[str, str]):
    """The run's configuration: preset -> config file -> --set; on --resume without a preset or config file,
    the run's stored configuration with the --set changes a resumed run allows."""
    from decaylab.run.config import RunConfig, resolve_run_config
    from decaylab.training import resume

    if args.resume and not (args.preset or args.config):
        return resume.resume_config(resume.load_stored_config(Path(args.out), RunConfig), overrides)
    return resolve_run_config(args.preset, args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from decaylab.run.config import RUN_PRESETS, preset_description
    from decaylab.training import resume, stopping
    from decaylab.training.loop import TrainingDiverged, train

    if args.list_presets:
        for name in RUN_PRESETS.names():
            print(f"{name:16s} {preset_description(name)}")
        return 0
    overrides = parse_set_args(args.overrides)
    if args.resume and not args.out:
        raise ValueError("--resume needs --out DIR: the run directory to continue")
    cfg = _config(args, overrides)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        return 0
    out = Path(args.out) if args.out else _default_out(args)
    is_main = int(os.environ.get("RANK", "0")) == 0
    finished = resume.finished_summary(out, cfg.train.max_steps) if args.resume else None
    try:
        # Ctrl-C stops after the step in flight, with a checkpoint; under torchrun the processes would have to agree
        # on the step, so there it stops at once as before (back to the last periodic checkpoint).
        alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
        with stopping.between_steps() if alone else contextlib.nullcontext():
            summary = train(cfg, out, resume=args.resume)
    except TrainingDiverged as e:
        print(f"decaylab train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"decaylab train: stopped; continue with: decaylab train --resume --out {out}", file=sys.stderr)
        return 130
    if not is_main:
        return 0
    if finished is None:
        print(
            f"trained {summary['steps']} steps ({summary['tokens']:,} tokens) in {summary['train_time_s']:.0f} s, "
            f"{summary['tokens_per_s']:,.0f} tokens/s, final loss {summary['final_loss']:.4f} -> {out}"
        )
    if args.no_eval:
        return 0
    if finished is not None and (out / EVAL).is_file():
        print(f"{EVAL} is already in {out}; `decaylab eval {out}` evaluates it again")
        return 0
    return _evaluate(out)


def _evaluate(out: Path) -> int:
    try:
        from decaylab.evaluation import evaluate
    except ImportError:
        print("decaylab.evaluation is not available; run `decaylab eval` later", file=sys.stderr)
        return 0
    print(f"evaluating {out}: perplexity of the valid and test splits, length extrapolation, decay statistics",
          flush=True)
    started = time.perf_counter()
    result = evaluate(out, log=lambda message: print(f"  eval: {message}", file=sys.stderr, flush=True))
    shown = [f"{key} {result[key]:.2f}" for key in ("val_ppl", "test_ppl") if key in result]
    if "mqar_accuracy" in result:
        shown.append(f"mqar_accuracy {result['mqar_accuracy']:.3f}")
    elapsed = time.perf_counter() - started
    print("eval: " + (", ".join(shown) or "done") + f" in {elapsed:.0f} s (eval.json in {out})")
    return 0
