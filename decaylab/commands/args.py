"""Argument types and flags shared by the subcommands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def add_set_argument(parser: argparse.ArgumentParser, help: str, dest: str = "overrides") -> None:
    """The repeatable ``--set KEY=VALUE`` flag (dotted keys, parsed by ``decaylab.config.parse_set_args``)."""
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest=dest, help=help)
