"""The train/validation split of a corpus, as a stream of pieces ready to tokenize.

Rule (nanoGPT's, so validation losses compare with nanoGPT's ``val.bin``, the last 10% of the
text): the corpus is the ordered concatenation of its documents, and everything after byte offset
``(1 - val_fraction) * total_bytes`` is validation. The document straddling that offset is split
at the safe boundary (``boundaries``) nearest to it, so its two parts tokenize exactly as the whole
document would, and each part ends with its own end-of-text token. With an explicit validation
corpus (``val_source``) the whole source is training data instead.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import takewhile
from typing import Any, NamedTuple, TypeVar

from llm_torch.data.boundaries import nearest_cut, split_text
from llm_torch.data.errors import DataError
from llm_torch.data.sources import Corpus

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
    """

    text: str
    val: bool
    eot: bool
    nbytes: int


@dataclass(frozen=True)
class SplitPoint:
    """Where validation starts: character ``char`` of document ``document`` (0-based).

    Documents are counted in corpus order, empty ones included. Documents before ``document`` and
    ``text[:char]`` of it are training data; the rest is validation.
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


class CorpusSplit:
    """Streams a corpus as train then validation ``Piece`` s.

    Args:
        train: The corpus (training data, plus validation when ``val`` is None).
        val: An explicit validation corpus, or None to hold out the end of ``train``.
        val_fraction: Fraction of ``train``'s bytes held out when ``val`` is None.
        max_chars: Largest piece in characters (see ``boundaries.split_text``).
    """

    def __init__(
        self,
        train: Corpus,
        val: Corpus | None = None,
        val_fraction: float = 0.1,
        max_chars: int = MAX_PIECE_CHARS,
    ) -> None:
        if val is None and not 0.0 < val_fraction < 1.0:
            raise DataError(
                f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}. Fix: use "
                "e.g. 0.1 to hold out the last 10% of the text, or give a val_source."
            )
        self.train = train
        self.val = val
        self.val_fraction = val_fraction
        self.max_chars = max_chars
        self.split_point: SplitPoint | None = None
        """Where validation began in ``train``; set once ``pieces`` has passed it."""

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that determines the pieces: part of the cache key."""
        return {
            "train": self.train.fingerprint,
            "val": None if self.val is None else self.val.fingerprint,
            "val_fraction": self.val_fraction if self.val is None else None,
            "max_chars": self.max_chars,
        }

    @cached_property
    def total_bytes(self) -> int:
        """UTF-8 size of all text, validation corpus included.

        Raises:
            DataError: The corpus (or validation corpus) holds no text.
        """
        total = 0
        for corpus in (self.train, self.val):
            if corpus is None:
                continue
            size = corpus.total_bytes()
            if size == 0:
                raise DataError(
                    f"The source {corpus.source!r} is empty: its {len(corpus.files)} file(s) hold "
                    "no text. Fix: point it at files that contain text."
                )
            total += size
        return total

    def pieces(self) -> Iterator[Piece]:
        """Yields every piece, all training pieces first, in corpus order."""
        if self.val is not None:
            yield from self._corpus_pieces(self.train, val=False)
            yield from self._corpus_pieces(self.val, val=True)
            return
        cut = int((1.0 - self.val_fraction) * self.total_bytes)
        offset = 0  # bytes before the current piece
        in_val = False
        for document, chunks in enumerate(self.train.documents()):
            done = 0  # characters of this document already yielded
            for text, last in _with_last(split_text(chunks, self.max_chars)):
                nbytes = _utf8_size(text)
                if in_val or offset + nbytes <= cut:
                    yield Piece(text, in_val, last, nbytes)
                else:
                    yield from self._cut(text, cut - offset, last, document, done)
                    in_val = True
                offset += nbytes
                done += len(text)

    def train_texts(self) -> Iterator[str]:
        """Yields the training pieces' texts only (e.g. to learn a character vocabulary)."""
        return (piece.text for piece in takewhile(lambda piece: not piece.val, self.pieces()))

    def _corpus_pieces(self, corpus: Corpus, val: bool) -> Iterator[Piece]:
        """All pieces of ``corpus``, each document's last piece followed by end-of-text."""
        for chunks in corpus.documents():
            for text, last in _with_last(split_text(chunks, self.max_chars)):
                yield Piece(text, val, last, _utf8_size(text))

    def _cut(
        self, text: str, cut_byte: int, last: bool, document: int, done: int
    ) -> Iterator[Piece]:
        """Splits the piece holding the cut at the nearest safe boundary.

        Args:
            text: The piece.
            cut_byte: Offset of the cut in the piece's UTF-8 bytes (0 <= cut_byte < size).
            last: Whether the piece ends its document.
            document: The document's index.
            done: Characters of the document before this piece.
        """
        # Map the byte offset to a character offset, rounding down inside a multi-byte character.
        cut_char = len(text.encode("utf-8")[:cut_byte].decode("utf-8", "ignore"))
        position = nearest_cut(text, cut_char)
        self.split_point = SplitPoint(document, done + position)
        head, tail = text[:position], text[position:]
        if done + position > 0:  # the document has a training part: end it with end-of-text
            yield Piece(head, False, True, _utf8_size(head))
        if tail:
            yield Piece(tail, True, last, _utf8_size(tail))
