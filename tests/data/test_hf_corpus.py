"""Hugging Face `datasets` corpora, loaded from local directories (no network): a directory of split files
and a `save_to_disk` dataset. Skipped only when `datasets` is not installed."""

from __future__ import annotations

import sys

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
