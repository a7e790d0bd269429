"""The ``decaylab`` command: one console script, subcommands looked up in a table.

Each subcommand lives in its own module with two functions: ``configure(parser)`` adds its flags (every flag
has help text) and ``run(args) -> int`` does the work. A subcommand's module is imported only when that
subcommand is on the command line, and no command-line module imports torch at import time, so
``decaylab --help`` and ``decaylab train --help`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Callable

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


class LazySubcommands(argparse._SubParsersAction):
    """Subparsers set up on demand: ``setup(parser)`` of a subcommand runs when the subcommand is chosen.

    argparse calls this action with the chosen name before it parses the rest of the line, which is the moment
    to import the subcommand's module; the listing in ``--help`` needs only the names and descriptions.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setups: dict[str, Callable[[argparse.ArgumentParser], None]] = {}

    def add_lazy(self, name: str, description: str, setup: Callable[[argparse.ArgumentParser], None]) -> None:
        self.add_parser(name, help=description, description=description)
        self._setups[name] = setup

    def setup(self, name: str) -> argparse.ArgumentParser:
        """The subparser of ``name``, set up (once)."""
        parser = self.choices[name]
        setup = self._setups.pop(name, None)
        if setup is not None:
            setup(parser)
        return parser

    def setup_all(self) -> None:
        for name in list(self._setups):
            self.setup(name)

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] in self.choices:
            self.setup(values[0])
        super().__call__(parser, namespace, values, option_string)


def module_setup(module_name: str, run_key: str) -> Callable[[argparse.ArgumentParser], None]:
    """A setup that imports ``module_name``, lets it configure the parser and stores its ``run`` as ``run_key``."""

    def setup(parser: argparse.ArgumentParser) -> None:
        module = importlib.import_module(module_name)
        module.configure(parser)
        parser.set_defaults(**{run_key: module.run})

    return setup


def _present(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The ``decaylab`` parser; ``lazy=True`` leaves each subcommand to be set up when it is chosen."""
    parser = argparse.ArgumentParser(
        prog="decaylab", description="Decay in linear attention: build, train, sweep, inspect and benchmark."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=LazySubcommands)
    for name, (module_name, description) in COMMANDS.items():
        if _present(module_name):  # a subcommand whose module is not in this build is left out
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


if __name__ == "__main__":
    sys.exit(main())
