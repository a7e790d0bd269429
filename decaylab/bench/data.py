"""``decaylab bench data``: corpus preparation (BPE training + tokenization of text files), time and peak memory.

```bash
decaylab bench data --corpus /tmp/synth --make-mb 200      # writes a synthetic corpus once, then measures
decaylab bench data --corpus /tmp/synth --tokenizer tok.json   # tokenization only, with a given tokenizer
```

One measurement per command, so that the process's peak RSS belongs to it alone; the cache directory is a fresh
temporary one. Prints one JSON line: seconds, tokens, tokens/s, MB/s of text, peak RSS in MB. Only the public API
(``DataConfig``, ``build_dataset``) is used, so the same command measures any version of the data layer.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def make_corpus(root: Path, megabytes: float, num_files: int, seed: int = 0) -> None:
    """Zipf-distributed pseudo-words in sentences, lines and paragraphs, split over ``num_files`` files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    lengths = rng.integers(1, 11, size=30_000)
    words = np.array(["".join(rng.choice(letters, n)) for n in lengths])
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    p /= p.sum()
    punct = np.array([" ", " ", " ", " ", " ", " ", " ", ", ", ". ", ".\n", "; ", "\n\n"])
    per_file = int(megabytes * 1_000_000) // num_files
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_files):
        n = per_file * 10 // 73  # about 7.3 bytes per word with its separator
        text = "".join(map(str.__add__, rng.choice(words, n, p=p).tolist(), rng.choice(punct, n).tolist()))
        (root / f"part-{i:04d}.txt").write_text(text + "\n")


def measure(corpus: Path, vocab_size: int, tokenizer: str | None, extra: list[str]) -> dict:
    from decaylab.config import with_overrides
    from decaylab.data import DataConfig, build_dataset

    overrides = {}
    for item in extra:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item!r} must be KEY=VALUE (a data.* setting, e.g. val_fraction=0.01)")
        overrides[key.strip()] = value.strip()
    cache = Path(tempfile.mkdtemp(prefix="decaylab-bench-"))
    try:
        settings = {"corpus": "text", "paths": (str(corpus),), "cache_dir": str(cache)}
        settings.update({"tokenizer": tokenizer} if tokenizer else {"vocab_size": vocab_size})
        cfg = with_overrides(DataConfig(**settings), overrides)
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
        "seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / max(seconds, 1e-9)),
        "text_mb_per_s": round(text_bytes / max(seconds, 1e-9) / 1e6, 2), "text_mb": round(text_bytes / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),  # ru_maxrss is KiB
        "trained_tokenizer": tokenizer is None,
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, required=True, help="directory of *.txt files")
    parser.add_argument("--make-mb", type=float, default=0, help="first write a synthetic corpus of this many MB")
    parser.add_argument("--files", type=int, default=100, help="files of the synthetic corpus (default 100)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary to train (default 8192)")
    parser.add_argument("--tokenizer", default=None, help="use this tokenizer file instead of training one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra data.* settings")


def run(args: argparse.Namespace) -> int:
    if args.make_mb < 0 or args.files < 1:
        raise ValueError("--make-mb must be >= 0 and --files >= 1")
    if args.make_mb:
        make_corpus(args.corpus, args.make_mb, args.files)
    elif not args.corpus.is_dir():
        raise FileNotFoundError(f"--corpus {args.corpus} is not a directory; pass --make-mb N to write one")
    print(json.dumps(measure(args.corpus, args.vocab_size, args.tokenizer, args.set)))
    return 0
