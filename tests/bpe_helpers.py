"""BPE encodings for the tests: tiktoken's real ones when cached, and a small one built here.

Tests that compare with real GPT-2 ids ask ``real_encoding`` for the cached tiktoken file and skip
when it is absent (the tests never download). Everything that only needs *a* byte-level BPE uses
``tiny_ranks``, trained below on a few kilobytes of text, so it runs on a fresh offline clone.
"""

import base64
import functools
import itertools
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import pytest
import regex
import tiktoken
from data_helpers import words_text
from tiktoken_ext.openai_public import r50k_pat_str

#: Skip reasons end with this; conftest counts (and can refuse) the skips that carry it.
NOT_CACHED = "BPE file is not cached in TIKTOKEN_CACHE_DIR (tests never download)"

#: GPT-2's pre-tokenizer regex, as tiktoken defines ``r50k_base`` (no ranks file needed).
GPT2_PATTERN = r50k_pat_str

# Meta's Llama 3 pattern, copied here from its tokenizer.py independently of the package.
META_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Besides English-like words: contractions, digits, punctuation runs, blank lines, runs of spaces
# and multi-byte letters, so the BPE also merges across the places the boundary tests probe.
_EXTRA = (
    "KING:\nThou art my lord, and I'll say it's done; we've seen, they'd come.\n\n"
    "QUEEN:  Sweet night -- 1234 days, 56 years / 789 hours!?\n\n"
    "naïve café, résumé é\u0301 漢字 字字 日本語 Ünïcödé\t\ttabs\r\nwindows\u00a0and\u3000spaces.\n"
    "trailing spaces   \n\n\nand a last line\n"
)


def real_encoding(name: str) -> tiktoken.Encoding:
    """Returns tiktoken's encoding ``name`` from its cache, or skips the test when it is not.

    conftest makes every download attempt fail at once, so a missing file means a skip.
    """
    __tracebackhide__ = True  # the skip is reported at the test's line, not here
    try:
        return tiktoken.get_encoding(name)
    except OSError:
        pytest.skip(f"{name} {NOT_CACHED}")


def is_cached(name: str) -> bool:
    """Whether tiktoken's encoding ``name`` loads here without downloading."""
    try:
        tiktoken.get_encoding(name)
    except OSError:
        return False
    return True


def train_ranks(text: str, pattern: str, merges: int) -> dict[bytes, int]:
    """Byte-level BPE ranks learned from ``text``: 256 single bytes, then up to ``merges`` merges.

    Each step merges the most frequent adjacent pair inside the pre-tokenizer pieces (ties go to
    the larger pair, so the result is deterministic) until no pair occurs twice.
    """
    ranks = {bytes([byte]): byte for byte in range(256)}
    words = Counter(
        tuple(bytes([byte]) for byte in piece.encode("utf-8"))
        for piece in regex.findall(pattern, text)
    )
    for _ in range(merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        if pairs[best] < 2:
            break
        merged = best[0] + best[1]
        ranks.setdefault(merged, len(ranks))
        words = Counter({merge_pair(word, best, merged): count for word, count in words.items()})
    return ranks


T = TypeVar("T")


def merge_pair(word: tuple[T, ...], pair: tuple[T, T], merged: T) -> tuple[T, ...]:
    """``word`` with every non-overlapping occurrence of ``pair``, left to right, as ``merged``."""
    out: list[T] = []
    i = 0
    while i < len(word):
        if word[i : i + 2] == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def tiny_ranks() -> dict[bytes, int]:
    """The tests' small BPE: 256 bytes plus a few hundred merges learned from English-like text."""
    return train_ranks(words_text(3_000) + _EXTRA * 20, GPT2_PATTERN, merges=300)


def write_ranks(path: Path, ranks: Mapping[bytes, int]) -> Path:
    """Writes ``ranks`` in tiktoken's format, ``base64(token) rank`` per line; returns ``path``."""
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in ranks.items()]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


@functools.cache
def tiny_encoding(pattern: str = GPT2_PATTERN) -> tiktoken.Encoding:
    """The small BPE as a tiktoken ``Encoding`` (GPT-2's pattern and ``<|endoftext|>`` by default).

    With GPT-2's pattern it stands in for ``r50k_base`` where only *a* BPE is needed; with
    ``META_LLAMA3_PATTERN`` it is the reference for ``"tiktoken:<tiny ranks file>"``.
    """
    ranks = tiny_ranks()
    return tiktoken.Encoding(
        name="tiny-bpe",
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": len(ranks)},
    )
