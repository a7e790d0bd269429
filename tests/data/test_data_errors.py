"""Bad input gets a clear error that names the fix: settings, paths, files, tokenizers."""

from __future__ import annotations

import json

import pytest

from decaylab.config import from_dict, to_dict, with_overrides
from decaylab.data import CORPORA, DataConfig, build_dataset, load_tokenizer
from decaylab.data.config import CORPUS_NAMES


def test_corpus_registry_matches_the_config():
    assert sorted(CORPORA.names()) == sorted(CORPUS_NAMES)


def test_unknown_corpus_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown corpus data.corpus='ptbb'. Did you mean 'ptb'"):
        DataConfig(corpus="ptbb")
    with pytest.raises(ValueError, match="Did you mean 'mqar'"):
        with_overrides(DataConfig(), {"corpus": "mqr"})


def test_command_line_overrides_parse():
    cfg = with_overrides(DataConfig(), {"corpus": "text", "paths": "a.txt,b.txt", "vocab_size": "4096"})
    assert cfg.paths == ("a.txt", "b.txt") and cfg.vocab_size == 4096
    cfg = from_dict(DataConfig, {"corpus": "mqar", "mqar_num_kv_pairs": "4", "mqar_num_queries": "None"})
    assert cfg.mqar_num_kv_pairs == 4 and cfg.mqar_num_queries is None


def test_json_round_trip():
    cfg = DataConfig(corpus="text", paths=("a", "b"), valid_fraction=0.02, vocab_size=512)
    assert from_dict(DataConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_corpus_without_a_valid_split_names_the_fix(tmp_path, text_dir):
    cfg = DataConfig(corpus="text", paths=(str(text_dir),), valid_fraction=0.0, vocab_size=260,
                     cache_dir=str(tmp_path))
    data = build_dataset(cfg)
    with pytest.raises(ValueError, match="no split 'valid'.*data.valid_paths or data.valid_fraction > 0"):
        next(data.eval_batches("valid", 16, 2))


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"vocab_size": 5000}, r"data.vocab_size is not used by data.corpus='ptb' \(only by 'text', 'hf', 'mqar'\)"),
        ({"paths": ("x.txt",)}, "data.paths is not used by data.corpus='ptb'"),
        ({"corpus": "mqar", "hf_path": "wikitext"}, "data.hf_path is not used by data.corpus='mqar'"),
        ({"corpus": "text"}, r"needs data.paths=\[files or directories"),
        ({"corpus": "text", "paths": ("x",), "vocab_size": 100}, "too small for byte-level BPE; use at least 257"),
        ({"corpus": "text", "paths": ("x",), "vocab_size": 300, "tokenizer": "t.json"}, "set only one of them"),
        ({"corpus": "text", "paths": ("x",), "valid_paths": ("v",), "valid_fraction": 0.1}, "drop data.valid_fraction"),
        ({"corpus": "text", "paths": ("x",), "test_fraction": 0.7}, r"must be in \[0, 0.5\)"),
        ({"corpus": "hf"}, "needs data.hf_path"),
        ({"corpus": "hf", "hf_path": "w", "valid_fraction": 0.1}, "drop data.valid_fraction or the separate valid"),
        ({"corpus": "mqar", "tokenizer": "t.json"}, "tokens are integers"),
        ({"max_tokens": 1000}, r"data.max_tokens is not used by data.corpus='ptb' \(only by 'text', 'hf'\)"),
        ({"corpus": "text", "paths": ("x",), "hf_streaming": True}, "data.hf_streaming is not used by"),
        ({"corpus": "text", "paths": ("x",), "max_tokens": 0}, "data.max_tokens=0 must be a positive integer"),
        ({"corpus": "hf", "hf_path": "w", "max_documents": -5}, "data.max_documents=-5 must be a positive"),
        ({"corpus": "text", "paths": ("x",), "tokenize_batch_bytes": 0}, "must be a positive integer"),
        ({"corpus": "text", "paths": ("x",), "tokenizer": "t.json", "tokenizer_sample_bytes": 10**6},
         "tokenizer_sample_bytes sizes BPE training but data.tokenizer gives a tokenizer"),
    ],
)
def test_invalid_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**settings)


def test_missing_paths_and_empty_files(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="data.paths: .*nope does not exist; fix the path"):
        build_dataset(DataConfig(corpus="text", paths=(str(missing),), cache_dir=str(tmp_path)))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty.txt is empty; remove it or add text"):
        build_dataset(DataConfig(corpus="text", paths=(str(tmp_path / "empty.txt"),), cache_dir=str(tmp_path)))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("words\n")
    with pytest.raises(ValueError, match=r"has no files matching data.glob='\*\*/\*.txt'"):
        build_dataset(DataConfig(corpus="text", paths=(str(tmp_path / "docs"),), cache_dir=str(tmp_path)))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        build_dataset(DataConfig(corpus="text", paths=(str(tmp_path / "latin1.txt"),), cache_dir=str(tmp_path)))


def test_too_little_text_to_hold_out(tmp_path):
    (tmp_path / "one.txt").write_text("a single line without enough text to split\n")
    with pytest.raises(ValueError, match="too small to hold out .*give the split its own files"):
        build_dataset(DataConfig(corpus="text", paths=(str(tmp_path / "one.txt"),), cache_dir=str(tmp_path)))


def test_missing_and_corrupt_tokenizer_files(tmp_path, text_dir):
    with pytest.raises(FileNotFoundError, match="tokenizer file .*missing.json does not exist; fix data.tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": ')  # cut off mid-file
    with pytest.raises(ValueError, match="is not valid JSON .*re-create or re-download it"):
        load_tokenizer(bad)
    bad.write_text('{"model": {"type": "Nonsense"}}')
    with pytest.raises(ValueError, match="is a corrupt bpe tokenizer file"):
        load_tokenizer(bad)
    bad.write_text('{"decaylab_tokenizer": "word", "vocab": ["a"]}')
    with pytest.raises(ValueError, match="corrupt word tokenizer file"):
        load_tokenizer(bad)
    bad.write_text('[1, 2, 3]')
    with pytest.raises(ValueError, match="not a tokenizer file"):
        load_tokenizer(bad)
    bad.write_text('{"decaylab_tokenizer": "wordpiece"}')
    with pytest.raises(ValueError, match="unknown tokenizer type 'wordpiece'"):
        load_tokenizer(bad)
    with pytest.raises(FileNotFoundError, match="fix data.tokenizer"):
        build_dataset(DataConfig(corpus="text", paths=(str(text_dir),), tokenizer=str(tmp_path / "missing.json"),
                                 cache_dir=str(tmp_path)))
