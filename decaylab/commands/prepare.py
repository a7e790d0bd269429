"""Tokenize a corpus into the cache ahead of training: ``decaylab prepare --set data.corpus=...``.

Large corpora take hours to tokenize; doing it once before ``torchrun`` keeps the training processes from
waiting at their first barrier (and from timing out there). Settings are the ``data.`` keys of a run, given
with ``--set`` (the ``data.`` prefix is optional) and/or read from a run's ``config.json`` (``--config``).
Prints one line per split: tokens and UTF-8 bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from decaylab.commands.args import add_set_argument
from decaylab.config import from_dict, with_overrides
from decaylab.data.config import DataConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="a run's config.json (its 'data' section is used) or a JSON file of data settings")
    add_set_argument(parser, "a data setting, e.g. --set data.corpus=hf --set data.hf_streaming=true", dest="set")


def data_config(args: argparse.Namespace) -> DataConfig:
    cfg = DataConfig()
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"--config {args.config} does not exist; fix the path")
        loaded = json.loads(args.config.read_text())
        cfg = from_dict(DataConfig, loaded.get("data", loaded))
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} is not KEY=VALUE; e.g. --set data.corpus=text")
        overrides[key.removeprefix("data.")] = value
    return with_overrides(cfg, overrides)


def run(args: argparse.Namespace) -> int:
    from decaylab.data.build import build_dataset
    from decaylab.data.dataset import TokenDataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the cache's progress lines
    data = build_dataset(data_config(args))
    if not isinstance(data, TokenDataset):
        print(f"data.corpus={data_config(args).corpus!r} is generated on the fly; there is nothing to prepare")
        return 0
    for split in data.splits:
        tokens, num_bytes = data.split_size(split)
        print(f"{split}: {tokens:,} tokens, {num_bytes:,} bytes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="decaylab prepare", description=__doc__.split("\n")[0])
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
