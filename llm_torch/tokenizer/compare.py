"""Bytes per token of several tokenizers on the same held-out text, as nanochat's evaluation does.

Bytes per token is the compression a tokenizer gives: more bytes per token means shorter
sequences, so a model sees more text per context window and per FLOP. It is only comparable on
the same text, so every tokenizer here encodes exactly the same pieces, read once.
"""

import dataclasses
from collections.abc import Mapping, Sequence

from llm_torch.corpus.sources import resolve_source
from llm_torch.tokenizer.base import Tokenizer, TokenizerUnavailableError
from llm_torch.tokenizer.factory import get_tokenizer
from llm_torch.tokenizer.train import TextStats, corpus_texts

#: Reference tokenizers compared by default: GPT-2's, GPT-4's and GPT-4o's.
REFERENCE_TOKENIZERS: tuple[str, ...] = ("gpt2", "cl100k_base", "o200k_base")


@dataclasses.dataclass(frozen=True)
class Row:
    """One tokenizer's result; ``tokens`` is ``None`` when it could not be loaded."""

    name: str
    vocab_size: int | None
    tokens: int | None
    text_bytes: int
    note: str = ""

    @property
    def bytes_per_token(self) -> float | None:
        """UTF-8 bytes of the text per token."""
        return None if not self.tokens else self.text_bytes / self.tokens


def load_references(names: Sequence[str]) -> dict[str, Tokenizer | str]:
    """Each named tokenizer, or the reason it is unavailable (e.g. its file is not cached)."""
    loaded: dict[str, Tokenizer | str] = {}
    for name in names:
        try:
            loaded[name] = get_tokenizer(name)
        except TokenizerUnavailableError:
            loaded[name] = "not available (its file is not cached, see TIKTOKEN_CACHE_DIR)"
    return loaded


def count_tokens(
    source: str, tokenizers: Mapping[str, Tokenizer | str], max_chars: int | None = None
) -> list[Row]:
    """Encode the text of ``source`` with each tokenizer and count the tokens.

    Args:
        source: Any data source (the held-out text).
        tokenizers: ``{label: tokenizer}``, or ``{label: reason}`` for one that could not load.
        max_chars: Count on at most this many characters.

    Raises:
        ValueError: The source holds no text.
    """
    loaded = {label: tok for label, tok in tokenizers.items() if not isinstance(tok, str)}
    counts = dict.fromkeys(loaded, 0)
    stats = TextStats()
    for text in corpus_texts(resolve_source(source), max_chars, stats=stats):
        for label, tokenizer in loaded.items():
            counts[label] += len(tokenizer.encode_to_numpy(text))
    if stats.bytes == 0:
        raise ValueError(f"The source {source!r} holds no text to evaluate on.")
    return [
        Row(label, None, None, stats.bytes, tok)
        if isinstance(tok, str)
        else Row(label, tok.vocab_size, counts[label], stats.bytes)
        for label, tok in tokenizers.items()
    ]


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table; the last column is each tokenizer's tokens relative to the first's."""
    first = rows[0].tokens
    lines = [
        f"{'tokenizer':<28} {'vocab':>8} {'tokens':>12} {'bytes/token':>12} {'vs first':>9}",
    ]
    for row in rows:
        if row.tokens is None:
            lines.append(f"{row.name:<28} {row.note}")
            continue
        ratio = f"{row.tokens / first:.3f}x" if first else "-"
        lines.append(
            f"{row.name:<28} {row.vocab_size:>8,} {row.tokens:>12,} "
            f"{row.bytes_per_token:>12.3f} {ratio:>9}"
        )
    return "\n".join(lines)
