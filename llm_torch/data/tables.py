"""Documents stored as tables: Parquet files, Arrow files and Hugging Face datasets.

One document per row, in a text column. Files are read one record batch at a time (Parquet: row
group by row group), so memory stays flat whatever their size; ``datasets`` is imported only
when a dataset is asked for, so text sources work without it.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_torch.data.errors import DataError

TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
"""Files read as tables, one document per row (``.arrow``: a ``datasets`` cache file)."""

BATCH_ROWS = 1024
"""Rows per record batch read from a table file."""


def unreadable(path: Path, err: Exception, what: str = "read") -> DataError:
    """The error for a file that cannot be read, naming it and the fix."""
    return DataError(
        f"Cannot {what} {str(path)!r}: {err}. Fix: check that it exists, is readable and is not "
        "corrupt (re-download it), or remove it from the source."
    )


def _text_column(table: Any, path: Path, column: str) -> Any:
    """Checks that ``column`` of a Parquet/Arrow schema holds strings.

    Raises:
        DataError: The column is missing or is not a string column.
    """
    import pyarrow as pa

    if column not in table.names:
        raise DataError(
            f"{path} has no column {column!r} (its columns: {', '.join(table.names)}). Fix: "
            "set data.text_column to the column that holds the documents."
        )
    kind = table.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(
            f"{path}: column {column!r} holds {kind}, not text. Fix: set data.text_column to "
            "a string column."
        )
    return column


def _record_batches(path: Path, column: str) -> Iterator[Any]:
    """Streams the text column of a Parquet file or an Arrow (IPC stream) file, batch by batch.

    Raises:
        DataError: pyarrow is missing, the file cannot be read, or it lacks the text column.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"Reading {path} needs pyarrow. Fix: pip install 'llm-torch[data]'."
        ) from None
    try:
        if path.suffix.lower() == ".parquet":
            parquet = pq.ParquetFile(path)
            _text_column(parquet.schema_arrow, path, column)
            # One thread: the parent process reads while every core tokenizes.
            batches = parquet.iter_batches(BATCH_ROWS, columns=[column], use_threads=False)
            yield from batches
        else:
            with pa.memory_map(str(path)) as source:
                reader = pa.ipc.open_stream(source)
                _text_column(reader.schema, path, column)
                for batch in reader:
                    yield batch.select([column])
    except (OSError, pa.ArrowException) as err:
        raise unreadable(path, err, "read the table file") from None


def read_table_texts(path: Path, column: str = "text") -> Iterator[str]:
    """Yields the text column of each row (a null is an empty document).

    Raises:
        DataError: See ``_record_batches``.
    """
    for batch in _record_batches(path, column):
        for text in batch.column(0).to_pylist():
            yield text or ""


def table_text_bytes(path: Path, column: str = "text") -> int:
    """UTF-8 size of a table file's text column, summed in Arrow (no Python strings)."""
    import pyarrow.compute as pc

    total = 0
    for batch in _record_batches(path, column):
        total += pc.sum(pc.binary_length(batch.column(0))).as_py() or 0
    return total


def import_datasets(source: str) -> Any:
    """The ``datasets`` package, or a DataError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"The source {source!r} needs the datasets package. Fix: pip install 'llm-torch[data]'."
        ) from None
    return datasets


def load_error(target: str, name: str | None, split: str, err: Exception) -> DataError:
    """The error for a dataset that ``datasets`` cannot load."""
    return DataError(
        f"Cannot load the Hugging Face dataset {target!r} (name={name!r}, split={split!r}): "
        f"{type(err).__name__}: {err}. Fix: download it once where the hub is reachable (the "
        "same load_dataset call, with HF_DATASETS_OFFLINE unset), point HF_DATASETS_CACHE at that "
        "cache, or pass a save_to_disk folder or Parquet files instead."
    )


def streamed_texts(target: str, name: str | None, split: str, column: str) -> Iterator[str]:
    """Streams the text column of a dataset with ``datasets`` (``streaming=True``).

    Raises:
        DataError: The dataset cannot be loaded or has no such text column.
    """
    datasets = import_datasets(f"hf:{target}")
    try:
        rows = iter(datasets.load_dataset(target, name, split=split, streaming=True))
        first = next(rows, None)
    except Exception as err:  # datasets raises many types (offline, missing, bad config)
        raise load_error(target, name, split, err) from None
    if first is None:
        return
    if column not in first or not isinstance(first[column], str | None):
        raise DataError(
            f"The streamed dataset {target!r} has no text column {column!r} (its columns: "
            f"{', '.join(first)}). Fix: set data.text_column to the column with the documents."
        )
    yield first.get(column) or ""
    for row in rows:
        yield row.get(column) or ""
