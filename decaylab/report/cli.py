"""``decaylab report DIR``: write report.md and a self-contained report.html for a sweep directory."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", metavar="DIR", help="a sweep directory (the --out of `decaylab sweep`), holding results.sqlite"
    )


def run(args: argparse.Namespace) -> int:
    from decaylab.report.render import write_report

    md, page = write_report(args.out)
    print(f"wrote {md} and {page}")
    return 0
