"""``decaylab report``: write report.md and a self-contained report.html for a sweep, or move its results.

    decaylab report DIR                          report of a sweep directory (its results.sqlite)
    decaylab report DIR --export FILE.jsonl      also write the results as compact JSON lines (to commit)
    decaylab report FILE.jsonl --out DIR         rebuild DIR/results.sqlite from an export, then report there
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decaylab.rundir import CONFIG


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="DIR_OR_FILE",
        help="a sweep directory (the --out of `decaylab sweep`, holding results.sqlite) or a results export (.jsonl)",
    )  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="with a .jsonl export: where to rebuild and report (new dir)")
    parser.add_argument("--export", metavar="FILE", help="also write the sweep's results as JSON lines to FILE")


def run(args: argparse.Namespace) -> int:
    given = Path(args.source)
    if (given / CONFIG).is_file() and not (given / "results.sqlite").exists():
        raise ValueError(
            f"{given} is a training run, not a sweep directory; `decaylab eval {given}` evaluates it. "
            "`decaylab report` reads the --out of `decaylab sweep` (or a results export)"
        )
    from decaylab.report.render import write_report
    from decaylab.sweep.archive import export_results, import_results

    source = Path(args.source)
    if source.is_file():
        if not args.out:
            raise ValueError(f"{source} is a results export; give --out DIR for the rebuilt sweep and its report")
        if args.export:
            raise ValueError("--export reads a sweep directory; the source here is already an export")
        runs = import_results(source, Path(args.out) / "results.sqlite")
        print(f"rebuilt {Path(args.out) / 'results.sqlite'} from {source} ({runs} runs)")
        source = Path(args.out)
    elif args.out:
        raise ValueError("--out is for a .jsonl export; a sweep directory is reported in place")
    md, page = write_report(source)
    print(f"wrote {md} and {page}")
    if args.export:
        runs = export_results(source / "results.sqlite", args.export)
        print(f"wrote {args.export} ({runs} runs)")
    return 0
