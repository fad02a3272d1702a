"""Documents stored as tables: Parquet files, Arrow files and Hugging Face datasets.

One document per row, in a text column. Files are read one group at a time (a Parquet row group,
an Arrow record batch), so memory stays flat whatever their size, and a group can be read by any
process from ``(path, index)`` alone: tokenizer processes read their own groups, so the parent
process never handles table text. ``datasets`` is imported only when a dataset is asked for, so
text sources work without it.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from llm_torch.corpus.errors import DataError

TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
"""Files read as tables, one document per row (``.arrow``: a ``datasets`` cache file)."""


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


class TableGroup(NamedTuple):
    """One row group of a Parquet file, or one record batch of an Arrow file.

    The unit of work that tokenizer processes read themselves, so the parent never touches table
    text: a few MB (FineWeb's files hold row groups of 1,000 documents), read whole.

    Attributes:
        path: The file.
        number: The row group's (Parquet) or record batch's (Arrow) position in the file.
        rows: Documents in it.
        column: The text column.
        offset: Byte offset of the record batch's message (Arrow; 0 for Parquet).
    """

    path: Path
    number: int
    rows: int
    column: str
    offset: int = 0

    @property
    def ends_document(self) -> bool:
        """Every row is a whole document."""
        return True

    def texts(self) -> list[str]:
        """Its documents (see ``group_texts``)."""
        return group_texts(self)

    def measure(self) -> tuple[int, int]:
        """UTF-8 size of its documents (summed in Arrow) and their number."""
        return group_text_bytes(self), self.rows

    def chars_before(self) -> int:
        """Each row is its own document: nothing of it comes before."""
        return 0


def _import_pyarrow(path: Path) -> Any:
    """pyarrow, or a DataError saying how to install it."""
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DataError(
            f"Reading {path} needs pyarrow. Fix: pip install 'llm-torch[data]'."
        ) from None
    return pyarrow


def table_groups(path: Path, column: str = "text") -> list[TableGroup]:
    """Lists a table file's groups from its metadata (Parquet) or message headers (Arrow).

    Raises:
        DataError: pyarrow is missing, the file cannot be read, or it lacks the text column.
    """
    pa = _import_pyarrow(path)
    try:
        if path.suffix.lower() == ".parquet":
            parquet = pa.parquet.ParquetFile(path)
            _text_column(parquet.schema_arrow, path, column)
            metadata = parquet.metadata
            return [
                TableGroup(path, index, metadata.row_group(index).num_rows, column)
                for index in range(metadata.num_row_groups)
            ]
        groups: list[TableGroup] = []
        with pa.memory_map(str(path)) as source:  # zero-copy: only headers are parsed
            schema = pa.ipc.read_schema(pa.ipc.read_message(source))
            _text_column(schema, path, column)
            while True:
                offset = source.tell()
                try:
                    message = pa.ipc.read_message(source)
                except EOFError:
                    return groups
                rows = pa.ipc.read_record_batch(message, schema).num_rows
                groups.append(TableGroup(path, len(groups), rows, column, offset))
    except (OSError, pa.ArrowException) as err:
        raise unreadable(path, err, "read the table file") from None


def _group_column(group: TableGroup) -> Any:
    """The text column of one group, as an Arrow array.

    Raises:
        DataError: pyarrow is missing or the file cannot be read.
    """
    pa = _import_pyarrow(group.path)
    try:
        if group.path.suffix.lower() == ".parquet":
            parquet = pa.parquet.ParquetFile(group.path)
            # One thread: every core is already a tokenizer process.
            table = parquet.read_row_group(group.number, columns=[group.column], use_threads=False)
            return table.column(0)
        with pa.memory_map(str(group.path)) as source:
            schema = pa.ipc.read_schema(pa.ipc.read_message(source))
            source.seek(group.offset)
            batch = pa.ipc.read_record_batch(pa.ipc.read_message(source), schema)
            return batch.column(schema.get_field_index(group.column))
    except (OSError, pa.ArrowException) as err:
        raise unreadable(group.path, err, "read the table file") from None


def group_texts(group: TableGroup) -> list[str]:
    """The documents of one group (a null is an empty document).

    Raises:
        DataError: pyarrow is missing or the file cannot be read.
    """
    return [text or "" for text in _group_column(group).to_pylist()]


def group_text_bytes(group: TableGroup) -> int:
    """UTF-8 size of one group's documents, summed in Arrow (no Python strings)."""
    import pyarrow.compute as pc

    return pc.sum(pc.binary_length(_group_column(group))).as_py() or 0


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
