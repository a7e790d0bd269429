"""The ``decaylab`` command: one console script, subcommands looked up in a table.

Each subcommand lives in its own module of ``decaylab.commands`` (``bench`` in ``decaylab.bench.cli``) with two
functions: ``configure(parser)`` adds its flags (every flag has help text) and ``run(args) -> int`` does the work.
A subcommand's module is imported only when that subcommand is on the command line, and no command-line module
imports torch at import time, so ``decaylab --help`` and ``decaylab train --help`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from decaylab.commands.subcommands import LazySubcommands, module_setup, present

# name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("decaylab.commands.train", "train a model on a corpus into a run directory (resumable)"),
    "eval": ("decaylab.commands.evaluate", "evaluate a run: perplexity, length extrapolation, decay statistics"),
    "generate": ("decaylab.commands.generate", "sample text from a trained run"),
    "sweep": ("decaylab.commands.sweep", "run a design-space study (grid of configs), resumable and parallel"),
    "report": ("decaylab.commands.report", "write report.md and report.html for a sweep directory"),
    "bench": ("decaylab.bench.cli", "benchmark ops and kernels (speed and memory)"),
    "prepare": ("decaylab.commands.prepare", "tokenize a corpus into the cache ahead of training (large corpora)"),
    "export": ("decaylab.commands.export", "write a trained model as a Hugging Face transformers folder"),
}


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The ``decaylab`` parser; ``lazy=True`` leaves each subcommand to be set up when it is chosen."""
    parser = argparse.ArgumentParser(
        prog="decaylab", description="Decay in linear attention: build, train, sweep, inspect and benchmark."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=LazySubcommands)
    for name, (module_name, description) in COMMANDS.items():
        if present(module_name):  # a subcommand whose module is not in this build is left out
            sub.add_lazy(name, description, module_setup(module_name, "_run"))
    if not lazy:
        sub.setup_all()
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(lazy=True)
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
    except BrokenPipeError:
        # The reader of our output went away (`decaylab sweep ... --dry-run | head`): stop quietly, as Unix tools
        # do, and point stdout at nothing so that the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
