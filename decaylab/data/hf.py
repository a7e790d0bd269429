"""Reading Hugging Face `datasets` corpora lazily: rows in batches, from memory-mapped Arrow or a stream.

``load_hf`` opens a ``save_to_disk`` directory (memory-mapped), or calls ``load_dataset`` on a hub name or a
local directory of files, with ``streaming=True`` when ``data.hf_streaming`` is set (nothing is downloaded or
converted up front; rows arrive as they are read). ``hf_rows`` yields the text column ``ROWS_PER_READ`` rows at
a time in either case, so memory does not grow with the corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from decaylab.data.config import DataConfig

ROWS_PER_READ = 1000


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "data.corpus='hf' needs the `datasets` package: pip install 'decaylab[hf]' (or pip install datasets)"
        ) from None
    return datasets


def _saved_dir(cfg: DataConfig) -> Path | None:
    local = Path(cfg.hf_path).expanduser()
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
        return local
    return None


def load_hf(cfg: DataConfig):
    """A DatasetDict (or IterableDatasetDict when streaming) keyed by the dataset's split names."""
    datasets = _import_datasets()
    saved = _saved_dir(cfg)
    if saved is not None:
        loaded = datasets.load_from_disk(str(saved))
    else:
        try:
            loaded = datasets.load_dataset(cfg.hf_path, cfg.hf_name, streaming=cfg.hf_streaming)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"data.hf_path={cfg.hf_path!r} (data.hf_name={cfg.hf_name!r}) was not found ({e}); check the "
                f"name, or the path of a local dataset directory"
            ) from None
        except ConnectionError as e:
            raise ValueError(
                f"cannot reach the Hugging Face hub for data.hf_path={cfg.hf_path!r} ({e}); on a machine with network "
                f"run datasets.load_dataset(...).save_to_disk(DIR) and set data.hf_path=DIR"
            ) from None
    if isinstance(loaded, datasets.Dataset):  # a single saved Dataset is the training split
        loaded = datasets.DatasetDict({cfg.hf_train_split: loaded})
    elif isinstance(loaded, datasets.IterableDataset):
        loaded = datasets.IterableDatasetDict({cfg.hf_train_split: loaded})
    return loaded


def _is_stream(table: Any) -> bool:
    return isinstance(table, _import_datasets().IterableDataset)


def hf_rows(cfg: DataConfig, table: Any) -> Iterator[str]:
    """The text column of a split, row by row ('' for missing values), read in batches."""
    field = cfg.hf_text_field
    if table.column_names is not None and field in table.column_names:
        table = table.select_columns([field])  # other columns are never decoded
    for batch in table.iter(batch_size=ROWS_PER_READ):
        if field not in batch:
            raise ValueError(
                f"data.hf_text_field={field!r} is not a column of {cfg.hf_path!r}; columns: {', '.join(batch)}"
            )
        for row in batch[field]:
            yield row or ""


def row_bytes(cfg: DataConfig, table: Any) -> int:
    """UTF-8 bytes of the text column plus one newline per row (the joined text), read from Arrow offsets."""
    if _is_stream(table):
        raise ValueError(
            "data.hf_join_rows with data.hf_streaming=true cannot hold out a fraction of the text (its size is "
            "unknown until it is read); set data.hf_streaming=false or give the split its own source "
            "(data.hf_valid_split / data.hf_test_split)"
        )
    import pyarrow.compute as pc

    column = table.data.column(cfg.hf_text_field)
    return int(pc.sum(pc.binary_length(column)).as_py() or 0) + table.num_rows


def split_fingerprint(cfg: DataConfig, table: Any, hf_split: str) -> Any:
    """Identifies the split's content without reading it."""
    if not _is_stream(table):
        return table._fingerprint  # `datasets` derives it from the data files (or the saved state)
    local = Path(cfg.hf_path).expanduser()
    if local.exists():
        files = sorted(p for p in local.rglob("*") if p.is_file())
        return [hf_split, [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
    info = table.info  # a hub dataset: its name and published metadata (versions, split sizes, checksums)
    return [hf_split, str(info.version), str(info.splits), str(info.download_checksums), str(info.dataset_size)]
