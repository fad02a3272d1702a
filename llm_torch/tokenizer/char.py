"""Character-level tokenizer with a vocabulary learned from the training corpus (nanoGPT style)."""

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from llm_torch.tokenizer.base import EOT_TEXT, as_id_list

_UNKNOWN = np.iinfo(np.uint32).max  # lookup-table entry for code points outside the vocabulary


def _code_points(text: str) -> npt.NDArray[np.uint32]:
    """Returns the Unicode code points of ``text`` as a uint32 array (UTF-32 is one per char)."""
    # surrogatepass: a lone surrogate is reported as an unknown character, not a codec error.
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


class CharTokenizer:
    """Each character of ``chars`` is one id (its index); ``eot_id = len(chars)`` ends a document.

    Build it from a corpus with ``CharTokenizer.from_texts``; ``spec`` stores ``chars`` so a
    checkpoint rebuilds exactly the same ids. ``decode`` turns ``eot_id`` into ``EOT_TEXT``.
    """

    name = "char"
    cut_safe = True  # one id per character, whatever its neighbours

    def __init__(self, chars: str) -> None:
        """Creates the tokenizer from its vocabulary.

        Args:
            chars: The distinct characters, in id order (``from_texts`` sorts them).

        Raises:
            ValueError: ``chars`` is empty or repeats a character.
        """
        if not chars:
            raise ValueError("CharTokenizer needs at least one character in its vocabulary.")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer chars must be distinct characters.")
        self.chars = chars
        self.vocab_size = len(chars) + 1
        self.eot_id = len(chars)
        self._itos = [*chars, EOT_TEXT]
        # Dense code point -> id table: encoding a corpus is one vectorised lookup. At most
        # 0x110001 entries (4.4 MB); the last entry is always _UNKNOWN so larger code points clip
        # onto it.
        code_points = _code_points(chars)
        self._table = np.full(int(code_points.max()) + 2, _UNKNOWN, dtype=np.uint32)
        self._table[code_points] = np.arange(len(chars), dtype=np.uint32)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Learns the vocabulary (sorted distinct characters) from a stream of texts.

        Args:
            texts: Any iterable of strings, e.g. a generator over files; only the set of characters
                seen so far is kept in memory.

        Raises:
            ValueError: The texts contain no characters.
        """
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise ValueError("CharTokenizer.from_texts got no characters: the corpus is empty.")
        return cls("".join(sorted(seen)))

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable dict from which ``get_tokenizer`` rebuilds this tokenizer."""
        return {"name": self.name, "chars": self.chars}

    def encode(self, text: str) -> list[int]:
        """Encodes ``text`` one id per character.

        Raises:
            ValueError: A character is not in the vocabulary.
        """
        return self.encode_to_numpy(text).tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes each text (already vectorised per text, so no threads)."""
        return [self.encode(text) for text in texts]

    def encode_to_numpy(self, text: str) -> npt.NDArray[np.uint32]:
        """Encodes ``text`` into a 1-D uint32 array via a lookup table over code points.

        Raises:
            ValueError: A character is not in the vocabulary.
        """
        code_points = _code_points(text)
        ids = self._table[np.minimum(code_points, len(self._table) - 1)]
        unknown = ids == _UNKNOWN
        if unknown.any():
            self._raise_unknown(text, int(np.argmax(unknown)))
        return ids

    def _raise_unknown(self, text: str, position: int) -> None:
        """Raises the error for an out-of-vocabulary character, saying how to fix it."""
        char = text[position]
        raise ValueError(
            f"Character {char!r} (U+{ord(char):04X}) at position {position} is not in the char "
            f"tokenizer's vocabulary of {len(self.chars)} characters. The vocabulary is learned "
            "from the training text: include this character in that text and rebuild the data "
            "cache (or the tokenizer, with CharTokenizer.from_texts(...)), or remove it from "
            "the input."
        )

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes ids; ``eot_id`` becomes ``EOT_TEXT``.

        Raises:
            ValueError: An id outside ``range(vocab_size)``.
        """
        ids = as_id_list(ids, self.vocab_size)
        itos = self._itos
        return "".join([itos[i] for i in ids])

    def __reduce__(self) -> tuple[type["CharTokenizer"], tuple[str]]:
        """Pickles only ``chars``; the lookup table is rebuilt on load."""
        return (CharTokenizer, (self.chars,))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
