"""The ``decaylab`` command: one console script, subcommands looked up in a table.

Each subcommand lives in its own module with two functions: ``configure(parser)`` adds its flags (every flag
has help text) and ``run(args) -> int`` does the work. Modules are imported only when needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("decaylab.training.cli", "train a model on a corpus into a run directory (resumable)"),
    "eval": ("decaylab.evaluation.cli", "evaluate a run: perplexity, length extrapolation, decay statistics"),
    "generate": ("decaylab.generation_cli", "sample text from a trained run"),
    "sweep": ("decaylab.sweep.cli", "run a design-space study (grid of configs), resumable and parallel"),
    "report": ("decaylab.report.cli", "write report.md and report.html for a sweep directory"),
    "bench": ("decaylab.bench.cli", "benchmark ops and kernels (speed and memory)"),
    "prepare": ("decaylab.data.prepare", "tokenize a corpus into the cache ahead of training (large corpora)"),
    "export": ("decaylab.hf.cli", "write a trained model as a Hugging Face transformers folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decaylab", description="Decay in linear attention: build, train, sweep, inspect and benchmark."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, description) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("decaylab"):
                continue  # subcommand not present in this build
            raise
        p = sub.add_parser(name, help=description, description=description)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # User errors: a clear one-line message naming the fix, no traceback.
        print(f"decaylab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"decaylab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
