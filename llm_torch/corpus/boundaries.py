r"""Where text may be cut without changing its BPE tokenization.

A *safe boundary* is a position ``p`` (so ``text[:p]`` and ``text[p:]`` are both non-empty) where
``text[p - 1]`` and ``text[p]`` are, in one of two forms (``L`` a letter, ``str.isalpha``, Unicode's
``\p{L}``; ``X`` any character that is not whitespace):

- ``X`` + ``" L"``: a space between a non-space and a letter (``"to| be"``, ``"Now,| fair"``);
- ``X\n`` + ``L``: a line that ends in a non-space, followed by a line starting with a letter
  (``"speech.\n|HAMLET:"``).

Why this is safe for the GPT-2 (``r50k_base``), ``cl100k_base`` and ``o200k_base`` pre-tokenizer
regexes, and for GPT-4's as ``llm-torch train-tokenizer`` writes it and Llama 3's (all in
``tokenizer.tiktoken_file.CUT_SAFE_PATTERNS``): no alternative matches across it (letter, digit
and punctuation runs stop at whitespace, a space may only prefix the letters after it, newlines
are never a prefix of letters, and whitespace runs start at whitespace), so a piece ends at
``p - 1``. The patterns have no
look-behind, so the pieces from ``p`` on do not depend on the text before ``p``. Before ``p`` the
only look-aheads are in whitespace alternatives: in the first form they cannot reach the
non-whitespace ``text[p - 1]``; in the second, the lone ``"\n"`` (or a punctuation run's trailing
newline) is one piece both in the whole text and at the end of ``text[:p]`` (``\s++$``, or
``\s*[\r\n]`` in the patterns without it); a second whitespace character before it would make
them differ (``"\n\n"`` is one piece at the end, two in the middle), hence ``X``. BPE merges never
cross pieces, so encoding ``text[:p]`` and ``text[p:]`` separately and concatenating the ids gives
exactly the ids of ``text``. (``str.isspace`` covers Unicode's ``White_Space``, the regexes'
``\s``.) ``tests/test_corpus_boundaries.py`` checks this against every one of these patterns.

Byte and character tokenizers encode each character on its own, so any cut is safe for them.

The proof holds for these rules only. Others break it: a SentencePiece-style ``tokenizer.json``
adds "▁" at the start of each encode call (cut ``"be.\n|or"``, the piece ``"or"`` encodes as
``"▁or"``, not as the whole text's ``"or"``), and normalizers may rewrite text across a cut.
Tokenizers say which they are with ``Tokenizer.cut_safe``; for one that is not, the data
pipeline never cuts inside a document (``splits``) and nothing here is used.
"""

import re
from collections.abc import Callable, Iterable, Iterator


def is_safe_boundary(text: str, position: int) -> bool:
    """Whether ``text`` may be cut before ``position`` (see the module docstring)."""
    if not 0 < position < len(text):
        return False
    before, after = text[position - 1], text[position]
    if after == " ":
        return position + 1 < len(text) and text[position + 1].isalpha() and not before.isspace()
    return before == "\n" and after.isalpha() and position >= 2 and not text[position - 2].isspace()


def _candidates_backward(text: str, lo: int, hi: int) -> Iterator[int]:
    """Positions ``p`` in ``[lo, hi)`` at a space or just after a newline, from the last one."""
    lo = max(lo, 1)
    if hi <= lo:  # an empty window (rfind would read a negative end from the back)
        return
    space = text.rfind(" ", lo, hi)
    after_newline = text.rfind("\n", lo - 1, hi - 1) + 1  # 0 (< lo) when there is none
    while space >= lo or after_newline >= lo:
        if space >= after_newline:
            yield space
            space = text.rfind(" ", lo, space)
        else:
            yield after_newline
            after_newline = text.rfind("\n", lo - 1, after_newline - 1) + 1


def last_safe_boundary(text: str, lo: int, hi: int) -> int | None:
    """Returns the largest safe boundary ``p`` with ``lo <= p < hi``, or None."""
    for position in _candidates_backward(text, lo, hi):
        if is_safe_boundary(text, position):
            return position
    return None


_CANDIDATE = re.compile(r"(?= )|(?<=\n)")
"""Positions at a space or just after a newline: where a safe boundary can be."""


def first_safe_boundary(text: str, lo: int, hi: int) -> int | None:
    """Returns the smallest safe boundary ``p`` with ``lo <= p < hi``, or None."""
    for match in _CANDIDATE.finditer(text, max(lo, 1), hi):
        if match.start() < hi and is_safe_boundary(text, match.start()):
            return match.start()
    return None


def nearest_cut(text: str, target: int) -> int:
    """Returns the cut in ``[0, len(text)]`` nearest to ``target``: a safe boundary or an end.

    The ends of ``text`` count as cuts because callers pass a piece whose ends are already cuts
    (document ends or earlier safe boundaries). Ties go to the earlier position. Linear in the
    piece length; used once per corpus, for the train/validation cut.
    """
    for distance in range(len(text) + 1):
        for position in (target - distance, target + distance):
            if position in (0, len(text)) or is_safe_boundary(text, position):
                return position
    return 0  # unreachable: distance len(text) always reaches an end


CutFinder = Callable[[str, int, int], int | None]
"""``finder(text, lo, hi)``: the largest allowed cut ``p`` with ``lo <= p < hi``, or None."""


def split_text(
    chunks: Iterable[str], max_chars: int, last_cut: CutFinder = last_safe_boundary
) -> Iterator[str]:
    """Re-cuts a stream of text chunks into pieces of at most ``max_chars`` characters.

    Pieces end at the last safe boundary (or cut that ``last_cut`` allows) within ``max_chars``
    characters, so encoding the pieces one by one gives the same tokens as encoding the whole
    text. Fallback: a window of ``max_chars`` characters without any safe boundary (e.g. long
    numbers, runs of blank lines or text without spaces) is cut at exactly ``max_chars``; tokens
    may differ from whole-text encoding at such a cut. Memory stays bounded by ``max_chars`` plus
    one input chunk.

    Args:
        chunks: The text, in chunks of any size (e.g. as decoded from a file).
        max_chars: Largest piece, in characters; at least 2.
        last_cut: Where a piece may end instead of at a safe boundary (tokenizer training's own
            rule, ``tokenizer.train``); called as ``last_cut(text, start + 1, start + max_chars
            + 1)`` for the piece starting at ``start``.

    Yields:
        Non-empty pieces whose concatenation is the input text.
    """
    if max_chars < 2:
        raise ValueError(f"max_chars must be at least 2, got {max_chars}.")
    buffer = ""
    for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        start = 0
        while len(buffer) - start > max_chars:
            cut = last_cut(buffer, start + 1, start + max_chars + 1)
            end = start + max_chars if cut is None else cut
            yield buffer[start:end]
            start = end
        buffer = buffer[start:]
    if buffer:
        yield buffer
