"""Hugging Face `datasets` corpora, loaded from local directories (no network): a directory of split files
and a `save_to_disk` dataset. Skipped only when `datasets` is not installed."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from decaylab.data import DataConfig, build_dataset


@pytest.fixture(scope="module")
def datasets_offline(tmp_path_factory):
    """`datasets`, imported with the hub switched off and its cache in a temporary directory."""
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("HF_DATASETS_OFFLINE", "1")
    patch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    datasets = pytest.importorskip("datasets", reason="`datasets` is not installed (pip install 'decaylab[hf]')")
    datasets.disable_progress_bars()
    yield datasets
    patch.undo()


@pytest.fixture
def split_files(tmp_path):
    root = tmp_path / "hf-text"
    root.mkdir()
    (root / "train.txt").write_text("".join(f"line {i} of the decay corpus\n" for i in range(300)))
    (root / "validation.txt").write_text("a validation line\nanother one\n")
    (root / "test.txt").write_text("the test line\n")
    return root


def test_local_text_directory(datasets_offline, split_files, tmp_path):
    cfg = DataConfig(corpus="hf", hf_path=str(split_files), vocab_size=280, hf_join_rows=True,
                     cache_dir=str(tmp_path / "cache"))
    data = build_dataset(cfg)
    tok = data.tokenizer
    assert tok.decode(data.split("valid")) == "a validation line\nanother one\n<|endoftext|>"
    assert data.bytes_in_split("test") == len("the test line\n")
    assert tok.decode(data.split("train")).startswith("line 0 of the decay corpus\nline 1 of")


def test_saved_dataset_rows_are_documents(datasets_offline, tmp_path):
    rows = {"text": [f"document number {i} about gates" for i in range(40)], "id": list(range(40))}
    saved = tmp_path / "saved"
    datasets_offline.DatasetDict({"train": datasets_offline.Dataset.from_dict(rows)}).save_to_disk(str(saved))
    cfg = DataConfig(corpus="hf", hf_path=str(saved), hf_valid_split=None, hf_test_split=None,
                     valid_fraction=0.1, test_fraction=0.1, vocab_size=270, cache_dir=str(tmp_path / "cache"))
    data = build_dataset(cfg)
    eot = data.tokenizer.eot_id
    assert sum(int((data.split(s) == eot).sum()) for s in ("train", "valid", "test")) == 40  # one per row
    assert data.tokenizer.decode(data.split("test")).endswith("document number 39 about gates<|endoftext|>")


def test_hf_errors(datasets_offline, split_files, tmp_path):
    base = dict(corpus="hf", hf_path=str(split_files), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="data.hf_valid_split='dev' is not a split .*available: train, validation, "
                                         "test; or set data.hf_valid_split=None"):
        build_dataset(DataConfig(**base, hf_valid_split="dev"))
    with pytest.raises(ValueError, match="data.hf_text_field='content' is not a column .*columns: text"):
        build_dataset(DataConfig(**base, hf_text_field="content"))
    with pytest.raises(ValueError, match="cannot reach the Hugging Face hub .*save_to_disk"):  # offline here
        build_dataset(DataConfig(corpus="hf", hf_path="wikitext", hf_name="wikitext-103-raw-v1"))
    with pytest.raises(FileNotFoundError, match="was not found"):
        build_dataset(DataConfig(corpus="hf", hf_path=str(tmp_path / "no-such-dir")))


def test_missing_datasets_package_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ValueError, match=r"needs the `datasets` package: pip install 'decaylab\[hf\]'"):
        build_dataset(DataConfig(corpus="hf", hf_path="wikitext", hf_name="wikitext-103-raw-v1",
                                 cache_dir=str(tmp_path)))


def test_streaming_reads_the_same_tokens(datasets_offline, tmp_path):
    root = tmp_path / "rows"
    root.mkdir()
    (root / "train.txt").write_text("".join(f"row {i} about the decay of a gate\n" for i in range(200)))
    base = dict(corpus="hf", hf_path=str(root), hf_valid_split=None, hf_test_split=None, valid_fraction=0.05,
                test_fraction=0.05, vocab_size=280, cache_dir=str(tmp_path / "cache"))
    mapped = build_dataset(DataConfig(**base))
    streamed = build_dataset(DataConfig(**base, hf_streaming=True))
    for split in ("train", "valid", "test"):
        assert np.array_equal(mapped.split(split), streamed.split(split))
    # every 20th row is test (19, 39, ...), and each row is one document
    eot = mapped.tokenizer.eot_id
    assert int((mapped.split("test") == eot).sum()) == 10
    assert mapped.tokenizer.decode(mapped.split("test")).startswith("row 19 about")
    capped = build_dataset(DataConfig(**base, hf_streaming=True, max_documents=50))
    assert int((capped.split("train") == eot).sum()) == 50
    with pytest.raises(ValueError, match="data.hf_text_field='content' is not a column .*columns: text"):
        build_dataset(DataConfig(**{**base, "cache_dir": str(tmp_path / "c2")}, hf_streaming=True,
                                 hf_text_field="content"))


def test_joined_rows_hold_out_the_head(datasets_offline, split_files, tmp_path):
    cfg = DataConfig(corpus="hf", hf_path=str(split_files), hf_join_rows=True, hf_valid_split=None,
                     valid_fraction=0.1, vocab_size=280, cache_dir=str(tmp_path / "cache"))
    data = build_dataset(cfg)
    valid = data.tokenizer.decode(data.split("valid"))
    assert valid.startswith("line 0 of the decay corpus\n") and valid.endswith("\n<|endoftext|>")
    assert data.bytes_in_split("valid") == pytest.approx(0.1 * (split_files / "train.txt").stat().st_size, abs=40)
    with pytest.raises(ValueError, match="hf_streaming=true cannot hold out .*set data.hf_streaming=false"):
        build_dataset(dataclasses.replace(cfg, hf_streaming=True))
