"""Text and JSON Lines files: streamed whole, or cut into byte ranges that any process can read.

A text file is one document. To tokenize it on every core without the parent process reading it,
it is cut into ranges of about ``RANGE_BYTES`` at safe boundaries (``boundaries``): encoding the
ranges one by one gives the tokens of the whole file. Only for a ``cut_safe`` tokenizer: for any
other, a text file is one range, read and encoded whole. A cut is found by reading a small probe at
each multiple of ``RANGE_BYTES``; a probe without a safe boundary merges two ranges. A JSON Lines
file is cut the same way, after a newline, so each range holds whole lines (whole documents).

Text is decoded as strict UTF-8 (a leading byte-order mark is dropped): a file with invalid bytes
is an error naming the file and byte offset rather than a silent replacement, because replaced
characters would be trained on and would change the cache without any visible sign.
"""

import codecs
import json
from collections.abc import Callable, Iterator
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llm_torch.corpus.boundaries import first_safe_boundary
from llm_torch.corpus.errors import DataError

READ_BYTES = 1 << 20
"""Bytes read per step when streaming a file: memory stays flat whatever the file size."""

RANGE_BYTES = 1 << 22
"""Bytes of text per range: a fraction of a second of one core's tokenizing, a few MB in
memory."""

PROBE_BYTES = 1 << 14
"""Bytes read at each cut to find a safe boundary (text) or a newline (JSON Lines)."""

BOM = "\ufeff"


def utf8_error(path: Path, offset: int, err: UnicodeDecodeError) -> DataError:
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
                raise utf8_error(path, offset - pending + err.start, err) from None
            offset += len(data)
            if first and text:
                text = text.removeprefix(BOM)
                first = False
            if text:
                yield text
            if not data:
                return


def _jsonl_text(path: Path, raw: bytes, offset: int, line_number: Callable[[], int]) -> str | None:
    """The ``"text"`` field of one line (None for a blank line).

    Args:
        path: The file, for messages.
        raw: The line's bytes.
        offset: Its byte offset in the file.
        line_number: Gives its line number (called only to report an error).

    Raises:
        DataError: Invalid UTF-8, invalid JSON, or no ``"text"`` string.
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise utf8_error(path, offset + err.start, err) from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}, line {line_number()}: not valid JSON ({err.msg}). Fix: write one JSON "
            'object per line, like {"text": "..."}.'
        ) from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DataError(
            f'{path}, line {line_number()}: no "text" string field. Fix: every line of a '
            '.jsonl source must be a JSON object with the document in "text", like '
            '{"text": "..."}.'
        )
    return text


def read_jsonl_texts(path: Path) -> Iterator[str]:
    """Yields the ``"text"`` field of each non-blank line of a JSON Lines file.

    Raises:
        DataError: Invalid UTF-8, invalid JSON, or a line without a ``"text"`` string; the message
            names the file and line.
    """
    offset = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            text = _jsonl_text(path, raw, offset, partial(int, number))  # () -> number
            offset += len(raw)
            if text is not None:
                yield text


def _read(path: Path, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of a file."""
    with path.open("rb") as file:
        file.seek(start)
        return file.read(stop - start)


def _count_before(path: Path, stop: int, count: Callable[[np.ndarray], int]) -> int:
    """Sums ``count`` over the file's bytes before ``stop``, read in bounded blocks."""
    total = 0
    with path.open("rb") as file:
        while file.tell() < stop:
            block = file.read(min(READ_BYTES, stop - file.tell()))
            if not block:
                break
            total += count(np.frombuffer(block, dtype=np.uint8))
    return total


class TextRange(NamedTuple):
    """Bytes ``[start, stop)`` of a text file, cut at safe boundaries: part of one document.

    Attributes:
        path: The file.
        start: First byte (0, or a safe boundary).
        stop: End byte (a safe boundary, or the file size).
        last: Whether it ends the file, so end-of-text follows it.
    """

    path: Path
    start: int
    stop: int
    last: bool

    @property
    def ends_document(self) -> bool:
        """Whether its text ends a document (end-of-text follows)."""
        return self.last

    def texts(self) -> list[str]:
        """Its text, as a one-element list (the byte-order mark dropped at the file's start).

        Raises:
            DataError: It is not valid UTF-8 (the message gives the file's byte offset).
        """
        try:
            text = _read(self.path, self.start, self.stop).decode("utf-8")
        except UnicodeDecodeError as err:
            raise utf8_error(self.path, self.start + err.start, err) from None
        return [text.removeprefix(BOM) if self.start == 0 else text]

    def measure(self) -> tuple[int, int]:
        """Its size in bytes, known without reading, and the documents it ends (0 or 1)."""
        return self.stop - self.start, int(self.last)

    def chars_before(self) -> int:
        """Characters of its document before it (what a split point counts)."""
        starts = _count_before(self.path, self.start, lambda b: int(np.sum((b & 0xC0) != 0x80)))
        with self.path.open("rb") as file:
            return starts - (file.read(3) == BOM.encode() and self.start > 0)


class JsonlRange(NamedTuple):
    """Bytes ``[start, stop)`` of a JSON Lines file: whole lines, each a document.

    Attributes:
        path: The file.
        start: First byte (0, or just after a newline).
        stop: End byte (just after a newline, or the file size).
    """

    path: Path
    start: int
    stop: int

    @property
    def ends_document(self) -> bool:
        """Every line is a whole document."""
        return True

    def texts(self) -> list[str]:
        """The ``"text"`` field of each non-blank line.

        Raises:
            DataError: Invalid UTF-8, invalid JSON, or a line without a ``"text"`` string; the
                message names the file and line.
        """
        data = _read(self.path, self.start, self.stop)
        texts = []
        position = index = 0

        def line_number() -> int:  # only for an error message: counts the lines before
            return _count_before(self.path, self.start, lambda b: int(np.sum(b == 10))) + index + 1

        while position < len(data):
            end = data.find(b"\n", position) + 1 or len(data)
            text = _jsonl_text(self.path, data[position:end], self.start + position, line_number)
            if text is not None:
                texts.append(text)
            position = end
            index += 1
        return texts

    def measure(self) -> tuple[int, int]:
        """UTF-8 size of its documents and their number (a parsing pass)."""
        texts = self.texts()
        return sum(len(text.encode("utf-8")) for text in texts), len(texts)

    def chars_before(self) -> int:
        """Each line is its own document: nothing of it comes before."""
        return 0


def _text_cut(probe: bytes) -> int | None:
    """Byte offset in ``probe`` of its first safe boundary (before any invalid UTF-8), or None."""
    skip = 0
    while skip < min(3, len(probe)) and probe[skip] & 0xC0 == 0x80:  # inside a character
        skip += 1
    data = probe[skip:]
    try:  # an incomplete character at the end is left out
        text = codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=False)
    except UnicodeDecodeError as err:  # search before it; the range's reader reports it
        text = data[: err.start].decode("utf-8")
    # lo=2, hi=len-1: the boundary rule looks two characters back and one ahead.
    cut = first_safe_boundary(text, 2, len(text) - 1)
    return None if cut is None else skip + len(text[:cut].encode("utf-8"))


def _jsonl_cut(probe: bytes) -> int | None:
    """Byte offset in ``probe`` just after its first newline, or None."""
    newline = probe.find(b"\n")
    return None if newline < 0 else newline + 1


def _cuts(path: Path, range_bytes: int, find: Callable[[bytes], int | None]) -> list[int]:
    """Range starts: 0, then where ``find`` places a cut in the probe at each multiple."""
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as file:
        for target in range(range_bytes, size, range_bytes):
            file.seek(target)
            cut = find(file.read(PROBE_BYTES))
            if cut is not None and cuts[-1] < target + cut < size:  # else: merged with the next
                cuts.append(target + cut)
    return [*cuts, size]


def text_ranges(path: Path, range_bytes: int | None = None, cut: bool = True) -> list[TextRange]:
    """Cuts a text file into ranges at safe boundaries (one range if it is small).

    Args:
        path: The file.
        range_bytes: Bytes per range; ``RANGE_BYTES`` by default.
        cut: False: the whole file as one range, for a tokenizer that is not ``cut_safe``.
    """
    bounds = _cuts(path, range_bytes or RANGE_BYTES, _text_cut) if cut else [0, path.stat().st_size]
    last = len(bounds) - 2
    return [
        TextRange(path, start, stop, index == last)
        for index, (start, stop) in enumerate(pairwise(bounds))
    ]


def jsonl_ranges(path: Path, range_bytes: int | None = None) -> list[JsonlRange]:
    """Cuts a JSON Lines file into ranges of whole lines (one range if it is small).

    Args:
        path: The file.
        range_bytes: Bytes per range; ``RANGE_BYTES`` by default.
    """
    bounds = _cuts(path, range_bytes or RANGE_BYTES, _jsonl_cut)
    return [JsonlRange(path, start, stop) for start, stop in pairwise(bounds)]
