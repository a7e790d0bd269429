"""Subcommands set up only when chosen, so that ``decaylab --help`` (and ``decaylab bench --help``) import no torch.

A command table maps each name to a module with ``configure(parser)`` and ``run(args)``; ``LazySubcommands``
lists the names at once and imports a module when its name is on the command line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Callable


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



def present(module_name: str) -> bool:
    """Whether ``module_name`` is part of this installation (a subcommand whose module is missing is left out)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False
