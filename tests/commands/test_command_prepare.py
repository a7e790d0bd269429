"""``decaylab prepare``: tokenize into the cache ahead of training."""

from __future__ import annotations

import json

from decaylab.commands.prepare import main
from decaylab.data import BPETokenizer, DataConfig, build_dataset


def test_prepare_fills_the_cache_that_training_reads(text_dir, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    rc = main(["--set", "data.corpus=text", "--set", f"data.paths={text_dir}", "--set", "vocab_size=280",
               "--set", f"data.cache_dir={cache}"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("train: ") and "valid: " in out and "test: " in out

    def no_encoding(*args, **kwargs):
        raise AssertionError("prepare should have filled the cache")

    monkeypatch.setattr(BPETokenizer, "encode_batch", no_encoding)
    monkeypatch.setattr(BPETokenizer, "train", no_encoding)
    cfg = DataConfig(corpus="text", paths=(str(text_dir),), vocab_size=280, cache_dir=str(cache))
    tokens = len(build_dataset(cfg).split("train"))
    assert f"train: {tokens:,} tokens" in out
    # the same settings from a run's config.json
    (tmp_path / "config.json").write_text(json.dumps({"data": {"corpus": "text", "paths": [str(text_dir)],
                                                                "vocab_size": 280, "cache_dir": str(cache)}}))
    assert main(["--config", str(tmp_path / "config.json")]) == 0
    assert f"train: {tokens:,} tokens" in capsys.readouterr().out


def test_prepare_errors_name_the_fix(tmp_path, capsys):
    assert main(["--set", "data.corpus"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.json")]) == 2
    assert "does not exist; fix the path" in capsys.readouterr().err
    assert main(["--set", "data.corpus=text"]) == 2
    assert "needs data.paths" in capsys.readouterr().err
