"""`decaylab bench data` on CPU: a tiny synthetic corpus written, its BPE trained, tokenized and measured."""

from __future__ import annotations

import json

from decaylab.cli import main


def test_a_tiny_corpus_is_written_trained_and_measured(tmp_path, capsys):
    corpus = tmp_path / "synth"
    assert main(["bench", "data", "--corpus", str(corpus), "--make-mb", "0.05", "--files", "2",
                 "--vocab-size", "300"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in corpus.iterdir()) == ["part-0000.txt", "part-0001.txt"]
    assert result["trained_tokenizer"] is True and result["tokens"] > 1000 and result["peak_rss_mb"] > 0
    assert result["tokens_per_s"] > 0 and result["text_mb"] > 0
    tokenizer = tmp_path / "synth-bpe300.json"
    assert tokenizer.exists()

    # the same corpus again with the trained tokenizer: tokenization only, the same tokens
    assert main(["bench", "data", "--corpus", str(corpus), "--tokenizer", str(tokenizer)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["trained_tokenizer"] is False and again["tokens"] == result["tokens"]


def test_bad_arguments_are_refused(tmp_path, capsys):
    assert main(["bench", "data", "--corpus", str(tmp_path / "missing")]) == 2
    assert "is not a directory; pass --make-mb N to write one" in capsys.readouterr().err
    assert main(["bench", "data", "--corpus", str(tmp_path), "--make-mb", "-1"]) == 2
    assert "--make-mb must be >= 0" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("some text\n")
    assert main(["bench", "data", "--corpus", str(tmp_path), "--set", "valid_fraction"]) == 2
    assert "must be KEY=VALUE" in capsys.readouterr().err
