"""``decaylab report DIR``: write report.md and a self-contained report.html for a sweep directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", metavar="DIR", help="a sweep directory (the --out of `decaylab sweep`), holding results.sqlite"
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "config.json").is_file() and not (out / "results.sqlite").exists():
        raise ValueError(
            f"{out} is a training run, not a sweep directory; `decaylab eval {out}` evaluates it. `decaylab report` "
            "reads the --out of `decaylab sweep`"
        )
    from decaylab.report.render import write_report

    md, page = write_report(args.out)
    print(f"wrote {md} and {page}")
    return 0
