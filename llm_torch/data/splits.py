"""The train/validation split of a corpus, as a stream of pieces and table groups to tokenize.

Rule (nanoGPT's, so validation losses compare with nanoGPT's ``val.bin``, the last 10% of the
text): the corpus is the ordered concatenation of its documents, and everything after byte offset
``(1 - val_fraction) * total_bytes`` is validation. The document straddling that offset is split
at the safe boundary (``corpus.boundaries``) nearest to it, so its two parts tokenize exactly as
the whole document would, and each part ends with its own end-of-text token. With an explicit
validation corpus (``val_source``) the whole source is training data instead.

Cuts inside a document (the validation cut, pieces of ``max_chars``, ranges of text files) are
made only for a tokenizer whose rule makes them safe (``Tokenizer.cut_safe``: tiktoken patterns,
byte, char). For any other (``cut_documents=False``) each document is one piece, every text file
one unit, and the straddling document is encoded whole and its *tokens* are cut, at the same
fraction of them as the cut's fraction of its characters (``Piece.cut``): train and validation
tokens together are exactly those of each whole document, plus the end-of-text at the cut.

Files are streamed as units, unread (``UnitItem``: Parquet row groups, Arrow record batches,
byte ranges of text and JSON Lines files): the tokenizer process that encodes a unit reads it and
cuts its documents (``unit_pieces``) exactly as the parent cuts any other document. Only the unit
that holds the validation cut is read here, to cut it; the units' sizes are measured first
(``measure``, spread over the workers; text ranges need no reading).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import takewhile
from typing import Any, NamedTuple, TypeVar

from llm_torch.corpus.boundaries import nearest_cut, split_text
from llm_torch.corpus.errors import DataError
from llm_torch.corpus.sources import Corpus, Mapper, Sizes, Unit

MAX_PIECE_CHARS = 1 << 17
"""Characters per tokenizer call: large enough to amortise call overhead, small enough that the
pieces in flight stay a few MB and spread over threads."""

_T = TypeVar("_T")


class Piece(NamedTuple):
    """A piece of text to tokenize, in corpus order.

    Attributes:
        text: The text (may be empty only for a bare end-of-text marker).
        val: Whether it belongs to the validation split.
        eot: Whether an end-of-text token follows it (it ends a document or a split part).
        nbytes: Its UTF-8 size, for progress and the split offset.
        cut: None, or for a document encoded whole and cut by tokens (``cut_documents=False``):
            the character of ``text`` (the whole document) where validation begins. Its tokens
            are cut at ``token_cut``; the training part keeps those before, validation the rest.
    """

    text: str
    val: bool
    eot: bool
    nbytes: int
    cut: int | None = None


class UnitItem(NamedTuple):
    """A file unit wholly in one split, left for a tokenizer process to read and cut.

    Attributes:
        unit: The unit (a table group, or a range of a text or JSON Lines file).
        val: Whether it belongs to the validation split.
    """

    unit: Unit
    val: bool


Item = Piece | UnitItem
"""What a corpus split streams: text the parent read, or a unit a worker reads."""


@dataclass(frozen=True)
class SplitPoint:
    """Where validation starts: character ``char`` of document ``document`` (0-based).

    Documents are counted in corpus order, empty ones included. Documents before ``document`` and
    ``text[:char]`` of it are training data; the rest is validation. When documents are not cut
    (``cut_documents=False``), the first ``token_cut`` tokens of it are training data instead.
    """

    document: int
    char: int


def _with_last(items: Iterable[_T]) -> Iterator[tuple[_T, bool]]:
    """Yields ``(item, is_last)`` pairs, looking one item ahead."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield current, False
        current = item
    yield current, True


def _utf8_size(text: str) -> int:
    """UTF-8 size of ``text`` in bytes."""
    return len(text.encode("utf-8"))


def token_cut(tokens: int, char: int, chars: int) -> int:
    """The training tokens of a whole-encoded document cut for validation at character ``char``.

    The same fraction of its ``tokens`` as ``char`` is of its ``chars`` characters, rounded down.
    """
    return tokens * char // chars


def _texts(chunks: Iterable[str], max_chars: int | None) -> Iterable[str]:
    """A document's non-empty pieces: cut by ``split_text``, or whole when ``max_chars`` is None."""
    if max_chars is not None:
        return split_text(chunks, max_chars)
    text = "".join(chunks)
    return [text] if text else []


def document_pieces(
    chunks: Iterable[str], val: bool, max_chars: int | None, ends: bool = True
) -> Iterator[Piece]:
    """A document's pieces, the last followed by end-of-text if ``ends`` (it ends there).

    ``max_chars`` None: the document whole, as one piece (a tokenizer that is not cut-safe).
    """
    for text, last in _with_last(_texts(chunks, max_chars)):
        yield Piece(text, val, last and ends, _utf8_size(text))


def unit_pieces(item: UnitItem, max_chars: int | None) -> Iterator[Piece]:
    """The pieces of a unit's documents (read here: run by tokenizer processes).

    Raises:
        DataError: The file cannot be read or is malformed.
    """
    texts = item.unit.texts()
    for index, text in enumerate(texts):
        ends = index < len(texts) - 1 or item.unit.ends_document
        yield from document_pieces((text,), item.val, max_chars, ends)


class CorpusSplit:
    """Streams a corpus as train then validation items (``Piece`` s and ``UnitItem`` s).

    Args:
        train: The corpus (training data, plus validation when ``val`` is None).
        val: An explicit validation corpus, or None to hold out the end of ``train``.
        val_fraction: Fraction of ``train``'s bytes held out when ``val`` is None.
        max_chars: Largest piece in characters (see ``corpus.boundaries.split_text``).
        cut_documents: Whether documents may be cut inside (the tokenizer's ``cut_safe``); if
            not, they are tokenized whole (see the module docstring).
    """

    def __init__(
        self,
        train: Corpus,
        val: Corpus | None = None,
        val_fraction: float = 0.1,
        max_chars: int = MAX_PIECE_CHARS,
        cut_documents: bool = True,
    ) -> None:
        if val is None and not 0.0 < val_fraction < 1.0:
            raise DataError(
                f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}. Fix: use "
                "e.g. 0.1 to hold out the last 10% of the text, or give a val_source."
            )
        if not cut_documents:  # text files become one unit each
            train = replace(train, cut_text=False)
            val = None if val is None else replace(val, cut_text=False)
        self.train = train
        self.val = val
        self.val_fraction = val_fraction
        self.max_chars = max_chars
        self.cut_documents = cut_documents
        self.piece_chars: int | None = max_chars if cut_documents else None
        """Largest piece handed to the tokenizer; None: whole documents."""
        self.split_point: SplitPoint | None = None
        """Where validation began in ``train``; set once ``items`` has passed it."""
        self._sizes: Sizes | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that determines the pieces: part of the cache key."""
        return {
            "train": self.train.fingerprint,
            "val": None if self.val is None else self.val.fingerprint,
            "val_fraction": self.val_fraction if self.val is None else None,
            "max_chars": self.max_chars,
            **({} if self.cut_documents else {"cut_documents": False}),
        }

    def list_units(self) -> None:
        """Lists every file's units now (cached).

        Before forking workers, so that they inherit the listing and the readers it imported
        (pyarrow) instead of loading them each.

        Raises:
            DataError: A file is unreadable or malformed (the message names it).
        """
        for corpus in (self.train, self.val):
            if corpus is not None:
                _ = corpus.file_units

    def measure(self, map_: Mapper = map) -> None:
        """Sizes the training corpus's units, once, for the validation cut.

        Args:
            map_: ``map`` or a process pool's ``imap``: sizing parses JSON Lines and reads
                table text, so a pool spreads it over every core.
        """
        if self._sizes is None:
            self._sizes = self.train.unit_sizes(map_)

    @cached_property
    def total_bytes(self) -> int:
        """UTF-8 size of all text, validation corpus included.

        Raises:
            DataError: The corpus (or validation corpus) holds no text.
        """
        self.measure()
        corpora = [(self.train, self._sizes)]
        if self.val is not None:
            corpora.append((self.val, None))
        total = 0
        for corpus, sizes in corpora:
            size = corpus.total_bytes(sizes)
            if size == 0:
                raise DataError(
                    f"The source {corpus.source!r} is empty: its {len(corpus.files)} file(s) hold "
                    "no text. Fix: point it at files that contain text."
                )
            total += size
        return total

    def items(self) -> Iterator[Item]:
        """Yields every piece or unit, all training ones first, in corpus order.

        Units wholly on one side of the validation cut are yielded unread; the one unit that
        holds the cut is read here and yielded as pieces, cut like any other document.
        """
        if self.val is not None:
            yield from self._corpus_items(self.train, val=False)
            yield from self._corpus_items(self.val, val=True)
            return
        cut = int((1.0 - self.val_fraction) * self.total_bytes)
        assert self._sizes is not None  # measured by total_bytes
        offset = 0  # bytes before the current piece
        document = 0  # documents before the current one
        in_val = False
        for unit in self.train.units():
            docs: list[Iterable[str]]
            if isinstance(unit, Unit):
                size, ended = self._sizes[unit]
                if in_val or offset + size <= cut:
                    yield UnitItem(unit, in_val)
                    offset += size
                    document += ended
                    continue
                docs = [(text,) for text in unit.texts()]  # the unit holding the cut
                # Characters of its document before it; whether its last text ends a document.
                done, ends_last = unit.chars_before(), unit.ends_document
            else:
                docs, done, ends_last = [unit], 0, True  # a whole document, read here
            for index, chunks in enumerate(docs):
                ends = index < len(docs) - 1 or ends_last
                for text, last in _with_last(_texts(chunks, self.piece_chars)):
                    nbytes = _utf8_size(text)
                    if in_val or offset + nbytes <= cut:
                        yield Piece(text, in_val, last and ends, nbytes)
                    else:
                        yield from self._cut(text, cut - offset, last and ends, document, done)
                        in_val = True
                    offset += nbytes
                    done += len(text)
                document += ends
                done = 0

    def train_texts(self) -> Iterator[str]:
        """Yields the training text only (e.g. to learn a character vocabulary)."""
        for item in takewhile(lambda item: not item.val, self.items()):
            if isinstance(item, UnitItem):
                yield from (piece.text for piece in unit_pieces(item, self.piece_chars))
            else:
                yield item.text if item.cut is None else item.text[: item.cut]

    def _corpus_items(self, corpus: Corpus, val: bool) -> Iterator[Item]:
        """All of ``corpus``: its file units unread, the pieces of its other documents."""
        for unit in corpus.units():
            if isinstance(unit, Unit):
                yield UnitItem(unit, val)
            else:
                yield from document_pieces(unit, val, self.piece_chars)

    def _cut(
        self, text: str, cut_byte: int, last: bool, document: int, done: int
    ) -> Iterator[Piece]:
        """Splits the piece holding the cut at the nearest safe boundary, or by tokens.

        With ``cut_documents=False`` the piece is the whole document: both parts hold all of it,
        with ``Piece.cut`` at the cut's character, and are cut by tokens when encoded.

        Args:
            text: The piece.
            cut_byte: Offset of the cut in the piece's UTF-8 bytes (0 <= cut_byte < size).
            last: Whether the piece ends its document.
            document: The document's index.
            done: Characters of the document before this piece.
        """
        # Map the byte offset to a character offset, rounding down inside a multi-byte character.
        cut_char = len(text.encode("utf-8")[:cut_byte].decode("utf-8", "ignore"))
        if self.cut_documents:
            position = nearest_cut(text, cut_char)
            head, tail, cut = text[:position], text[position:], None
        else:
            position = cut_char
            head, tail, cut = text, text, position
        self.split_point = SplitPoint(document, done + position)
        head_bytes = _utf8_size(text[:position])
        if done + position > 0:  # the document has a training part: end it with end-of-text
            yield Piece(head, False, True, head_bytes, cut)
        if position < len(text):
            yield Piece(tail, True, last, _utf8_size(text) - head_bytes, cut)
