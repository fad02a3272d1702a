"""Training a byte-level BPE on a corpus, written as a tiktoken ranks file plus its sidecar.

The merges are learned by ``rustbpe`` (nanochat's trainer, in Rust): it counts the pre-tokenizer
pieces of the text in parallel, then runs an incremental merge loop whose ties go to the smaller
pair, so the same text and settings always give the same ranks. The result is written in
tiktoken's format (what Llama 3 ships), so encoding uses tiktoken's fast BPE everywhere else.

``vocab_size`` counts everything: 256 byte tokens, the learned merges and the special tokens,
which take the last ids (``<|endoftext|>`` first). ``get_tokenizer("tiktoken:DIR/tokenizer.model")``
then reports exactly ``vocab_size``.
"""

import base64
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import tiktoken

from llm_torch.corpus.boundaries import split_text
from llm_torch.corpus.sources import Corpus, resolve_source
from llm_torch.tokenizer.base import EOT_TEXT, TokenizerUnavailableError
from llm_torch.tokenizer.tiktoken_file import GPT4_PATTERN, SIDECAR_FORMAT, sidecar_path

RANKS_NAME = "tokenizer.model"
"""File name of the ranks file in the output folder (Llama 3's name for the same format)."""

PIECE_CHARS = 1 << 18
"""Longest text handed to the trainer at once. Long documents are cut (see ``_pieces``), so the
trainer's buffer (``BUFFER_TEXTS`` texts) stays under ~256 MB and its threads share the work."""

BUFFER_TEXTS = 256
"""Texts the trainer collects before counting them in parallel."""

PROGRESS_CHARS = 20_000_000
"""Print a progress line every this many characters read."""

_PATTERN_PROBE = (
    "Hello, World! It's 2024: ünïcödé 漢字 emoji 👩‍👩‍👧 combining é\u0301 tabs\t\tnew\r\nlines\n\n"
    "  spaces   and (punctuation)... 1234567 x=y+z;"
)

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def special_token_list(extra: Iterable[str] = ()) -> list[str]:
    """The reserved special tokens: ``<|endoftext|>`` first, then ``extra`` in order, once each.

    Raises:
        ValueError: An empty or whitespace-only token.
    """
    tokens = [EOT_TEXT]
    for token in extra:
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"Special token {token!r} is empty; give non-blank text.")
        if token not in tokens:
            tokens.append(token)
    return tokens


def check_pattern(pattern: str) -> None:
    """Check that ``pattern`` compiles in tiktoken and keeps every character of sample text.

    tiktoken encodes only the text the pattern matches, so a pattern with gaps (``[a-z]+``)
    would silently drop spaces or digits; failing before training saves a useless run.

    Raises:
        ValueError: The regex does not compile, or it drops part of the sample.
    """
    try:
        encoding = tiktoken.Encoding(
            name="pattern-check",
            pat_str=pattern,
            mergeable_ranks={bytes([byte]): byte for byte in range(256)},
            special_tokens={},
        )
    except ValueError as err:
        raise ValueError(f"--pattern {pattern!r} is not a valid regex: {err}") from None
    kept = encoding.decode(encoding.encode_ordinary(_PATTERN_PROBE))
    if kept != _PATTERN_PROBE:
        raise ValueError(
            f"--pattern {pattern!r} does not match every character: {_PATTERN_PROBE!r} keeps "
            f"only {kept!r}. tiktoken would drop the rest; end the pattern with a catch-all "
            r"alternative such as '|\s+|\S'."
        )


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds anything unless ``overwrite``, before any work.

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder without ``overwrite``.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} is a file; name a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"--out {str(out)!r} already exists and is not empty. Pass --overwrite to replace "
            f"its {RANKS_NAME}, or name a new folder."
        )


def num_merges(vocab_size: int, special_tokens: Sequence[str]) -> int:
    """Merges to learn so that bytes + merges + special tokens make exactly ``vocab_size``.

    Raises:
        ValueError: ``vocab_size`` leaves no room for the 256 byte tokens and the specials.
    """
    smallest = 256 + len(special_tokens)
    if vocab_size < smallest:
        raise ValueError(
            f"--vocab_size {vocab_size} is too small: it counts the 256 byte tokens and the "
            f"{len(special_tokens)} special token(s) {list(special_tokens)}, so it must be at "
            f"least {smallest}."
        )
    return vocab_size - smallest


def _shuffled(corpus: Corpus, seed: int | None) -> Corpus:
    """The corpus with its files in an order drawn from ``seed`` (corpus order for ``None``)."""
    if seed is None:
        return corpus
    files = list(corpus.files)
    random.Random(seed).shuffle(files)
    return dataclasses.replace(corpus, files=tuple(files))


def _last_line_start(text: str, lo: int, hi: int) -> int | None:
    """The largest ``p`` in ``[lo + 1, hi)`` just after a newline and before a non-space, or None.

    GPT-style patterns always end a piece there (a newline never joins the letters after it), so
    such cuts leave the pre-tokenizer pieces, hence the counts, as in the uncut text.
    """
    newline = text.rfind("\n", lo, hi - 1)
    while newline >= lo and text[newline + 1].isspace():
        newline = text.rfind("\n", lo, newline)
    return newline + 1 if newline >= lo else None


def _pieces(document: Iterable[str]) -> Iterator[str]:
    """Cut a document's chunks into texts of at most ``PIECE_CHARS``, at line starts.

    ``split_text`` with ``_last_line_start`` as its cut rule, else a cut at exactly
    ``PIECE_CHARS``. The cuts depend only on the text, so the counts stay deterministic.
    """
    return split_text(document, PIECE_CHARS, _last_line_start)


@dataclasses.dataclass
class TextStats:
    """What was read from a corpus: characters, UTF-8 bytes and documents."""

    chars: int = 0
    bytes: int = 0
    documents: int = 0


def corpus_texts(
    corpus: Corpus,
    max_chars: int | None = None,
    seed: int | None = None,
    stats: TextStats | None = None,
    log: Log | None = None,
) -> Iterator[str]:
    """Stream a corpus as texts of at most ``PIECE_CHARS``, stopping after ``max_chars``.

    Args:
        corpus: The documents.
        max_chars: Cap on the characters yielded (the last text is cut); ``None``: all.
        seed: Shuffles the order of the corpus files first, so that a ``max_chars`` cap samples
            the files rather than taking the first ones. ``None`` keeps the corpus order.
        stats: Filled with what was read.
        log: Receives a progress line every ``PROGRESS_CHARS`` characters.
    """
    stats = TextStats() if stats is None else stats
    next_report = PROGRESS_CHARS
    start = time.perf_counter()
    for document in _shuffled(corpus, seed).documents():
        stats.documents += 1
        for text in _pieces(document):
            if max_chars is not None and stats.chars + len(text) >= max_chars:
                text = text[: max_chars - stats.chars]
            stats.chars += len(text)
            stats.bytes += len(text.encode("utf-8"))
            if text:
                yield text
            if log is not None and stats.chars >= next_report:
                log(f"  read {stats.bytes / 1e6:,.0f} MB in {time.perf_counter() - start:.0f} s")
                next_report += PROGRESS_CHARS
            if max_chars is not None and stats.chars >= max_chars:
                return


def _import_rustbpe() -> Any:
    """Import ``rustbpe``, or say how to install it."""
    try:
        return importlib.import_module("rustbpe")
    except ImportError:
        raise TokenizerUnavailableError(
            "Training a tokenizer needs the rustbpe package, which is not installed. Fix: "
            "pip install 'llm-torch[tokenizer]' (or pip install rustbpe)."
        ) from None


def unique_ranks(learned: Iterable[tuple[bytes, int]]) -> dict[bytes, int]:
    """Ranks in order with repeated byte strings dropped and the rest renumbered densely.

    Two different merges can spell the same bytes (``"ab" + "c"`` and ``"a" + "bc"``). tiktoken
    maps bytes to one rank, so the later copy, which tiktoken would never produce, is dropped;
    shifting the ranks after it down keeps their order, hence the same encodings.
    """
    ranks: dict[bytes, int] = {}
    for token, _ in sorted(learned, key=lambda item: item[1]):
        ranks.setdefault(token, len(ranks))
    return ranks


def learn_ranks(
    texts: Callable[[], Iterator[str]], merges: int, pattern: str, log: Log = _stderr
) -> dict[bytes, int]:
    """Learn ``merges`` BPE merges with rustbpe; return ``256 + merges`` tiktoken ranks.

    Args:
        texts: Makes a fresh iterator over the training text (called again in the rare case
            that duplicate merges need a longer run).
        merges: Merges to learn.
        pattern: Pre-tokenizer regex.
        log: Receives progress lines.

    Raises:
        ValueError: The text has too few distinct pairs to learn ``merges`` merges.
        TokenizerUnavailableError: rustbpe is not installed.
    """
    rustbpe = _import_rustbpe()
    wanted = 256 + merges
    extra = 0
    while True:
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(
            texts(), wanted + extra, buffer_size=BUFFER_TEXTS, pattern=pattern
        )
        learned = [(bytes(token), rank) for token, rank in trainer.get_mergeable_ranks()]
        ranks = unique_ranks(learned)
        if len(ranks) >= wanted:
            return {token: rank for token, rank in ranks.items() if rank < wanted}
        if len(learned) < wanted + extra:  # the merge queue ran dry: no pair occurs twice
            raise ValueError(
                f"The training text supports only {len(ranks) - 256} merges, fewer than the "
                f"{merges} that --vocab_size asks for. Give more text (or a larger --max_chars), "
                f"or lower --vocab_size by at least {wanted - len(ranks)}."
            )
        extra += wanted - len(ranks)  # a merge spelt an existing token: learn one more each
        log(f"  {len(learned) - len(ranks)} merges repeat a token; learning {extra} more")


def ranks_file_bytes(ranks: dict[bytes, int]) -> bytes:
    """The ranks in tiktoken's file format, ``base64(token) rank`` per line, in rank order."""
    lines = (f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items())
    return "".join(sorted(lines, key=lambda line: int(line.split()[1]))).encode("ascii")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file, so a crash never leaves a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


@dataclasses.dataclass(frozen=True)
class TrainedTokenizer:
    """What ``train_tokenizer`` wrote.

    Attributes:
        path: The ranks file (``DIR/tokenizer.model``); its sidecar is ``path + ".json"``.
        vocab_size: Ids in total, special tokens included.
        special_tokens: ``{token: id}``.
        stats: The training text read.
        seconds: Wall time of reading and training.
    """

    path: Path
    vocab_size: int
    special_tokens: dict[str, int]
    stats: TextStats
    seconds: float


def train_tokenizer(
    source: str,
    vocab_size: int,
    out: str | os.PathLike[str],
    pattern: str = GPT4_PATTERN,
    special_tokens: Sequence[str] = (),
    max_chars: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    log: Log = _stderr,
) -> TrainedTokenizer:
    """Train a byte-level BPE on ``source``; write ``out/tokenizer.model`` and its sidecar JSON.

    Every setting is checked before the corpus is read, so a mistake costs no training time.

    Args:
        source: Any source the data module reads (``"shakespeare"``, files, folders, globs).
        vocab_size: Total ids: 256 bytes + merges + special tokens.
        out: Output folder (created).
        pattern: Pre-tokenizer regex, stored in the sidecar.
        special_tokens: Reserved tokens besides ``<|endoftext|>`` (always the first).
        max_chars: Train on at most this many characters.
        seed: Order of the source's files before the ``max_chars`` cut (see ``corpus_texts``).
        overwrite: Replace the files of a non-empty ``out``.
        log: Receives progress lines (stderr by default).

    Raises:
        ValueError: Bad ``vocab_size``, ``pattern``, ``max_chars``, special tokens, an empty
            source or too little text.
        FileExistsError: ``out`` exists and is not empty, without ``overwrite``.
        TokenizerUnavailableError: rustbpe is not installed.
    """
    specials = special_token_list(special_tokens)
    merges = num_merges(vocab_size, specials)
    check_pattern(pattern)
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"--max_chars must be positive, got {max_chars}.")
    out_dir = Path(out).expanduser()
    check_output(out_dir, overwrite)
    corpus = resolve_source(source)
    start = time.perf_counter()
    stats = TextStats()

    def texts() -> Iterator[str]:
        stats.chars = stats.bytes = stats.documents = 0
        yield from corpus_texts(corpus, max_chars, seed, stats, log)
        if stats.chars == 0:
            raise ValueError(f"The source {source!r} holds no text to train on.")
        log(
            f"Read {stats.bytes / 1e6:,.1f} MB ({stats.documents:,} documents) in "
            f"{time.perf_counter() - start:.1f} s; learning {merges:,} merges..."
        )

    log(f"Training a {vocab_size:,}-token BPE on {source!r} with rustbpe...")
    ranks = learn_ranks(texts, merges, pattern, log)
    seconds = time.perf_counter() - start
    ids = {token: len(ranks) + i for i, token in enumerate(specials)}
    data = ranks_file_bytes(ranks)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "pat_str": pattern,
        "special_tokens": ids,
        "eot": EOT_TEXT,
        "ranks_sha256": hashlib.sha256(data).hexdigest(),
        "vocab_size": vocab_size,
        "trained_with": {
            "trainer": f"rustbpe {importlib.metadata.version('rustbpe')}",
            "source": source,
            "max_chars": max_chars,
            "seed": seed,
            "text_chars": stats.chars,
            "text_bytes": stats.bytes,
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RANKS_NAME
    # The ranks go first: a sidecar never points at ranks that are not there yet.
    _write_atomic(path, data)
    _write_atomic(sidecar_path(path), (json.dumps(sidecar, indent=2) + "\n").encode("utf-8"))
    return TrainedTokenizer(path, vocab_size, ids, stats, seconds)
