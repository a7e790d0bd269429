"""Measure corpus preparation: BPE training + tokenization of a synthetic text corpus, time and peak memory.

```bash
python -m decaylab.data.bench --corpus /tmp/synth --make-mb 200      # writes the corpus once, then measures
python -m decaylab.data.bench --corpus /tmp/synth --tokenizer tok.json   # tokenization only, a given tokenizer
```

Each measurement runs in a fresh process (so peak RSS belongs to it alone) with an empty cache directory, and
prints one JSON line: seconds, tokens, tokens/s, MB/s of text, peak RSS in MB. Only the public API
(``DataConfig``, ``build_dataset``) is used, so the same script measures any version of the data layer.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_corpus(root: Path, megabytes: int, num_files: int, seed: int = 0) -> None:
    """Zipf-distributed pseudo-words in sentences, lines and paragraphs, split over ``num_files`` files."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(1, 11, size=30_000)
    words = np.array(["".join(rng.choice(letters, n)) for n in lengths])
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    p /= p.sum()
    punct = np.array([" ", " ", " ", " ", " ", " ", " ", ", ", ". ", ".\n", "; ", "\n\n"])
    per_file = megabytes * 1_000_000 // num_files
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_files):
        n = per_file * 10 // 73  # about 7.3 bytes per word with its separator
        text = "".join(map(str.__add__, rng.choice(words, n, p=p).tolist(), rng.choice(punct, n).tolist()))
        (root / f"part-{i:04d}.txt").write_text(text + "\n")


def measure(corpus: Path, vocab_size: int, tokenizer: str | None, extra: list[str]) -> dict:
    from decaylab.config import with_overrides
    from decaylab.data import DataConfig, build_dataset

    cache = Path(tempfile.mkdtemp(prefix="decaylab-bench-"))
    try:
        settings = {"corpus": "text", "paths": (str(corpus),), "cache_dir": str(cache)}
        settings.update({"tokenizer": tokenizer} if tokenizer else {"vocab_size": vocab_size})
        cfg = with_overrides(DataConfig(**settings), dict(kv.split("=", 1) for kv in extra))
        start = time.perf_counter()
        data = build_dataset(cfg)
        seconds = time.perf_counter() - start
        tokens = sum(len(data.split(s)) for s in ("train", "valid", "test"))
        text_bytes = sum(data.bytes_in_split(s) for s in ("train", "valid", "test"))
        if tokenizer is None:
            data.tokenizer.save(corpus.parent / f"{corpus.name}-bpe{vocab_size}.json")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds),
        "text_mb_per_s": round(text_bytes / seconds / 1e6, 2), "text_mb": round(text_bytes / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # ru_maxrss is KiB
        "trained_tokenizer": tokenizer is None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="directory of *.txt files")
    parser.add_argument("--make-mb", type=int, default=0, help="first write a synthetic corpus of this many MB")
    parser.add_argument("--files", type=int, default=100, help="files of the synthetic corpus")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary to train")
    parser.add_argument("--tokenizer", default=None, help="use this tokenizer file instead of training one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra data.* settings")
    args = parser.parse_args(argv)
    if args.make_mb:
        make_corpus(args.corpus, args.make_mb, args.files)
    print(json.dumps(measure(args.corpus, args.vocab_size, args.tokenizer, args.set)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
