"""Tokenizing a corpus split on every core into token shards, resumably.

The corpus split streams items in order (``splits``): file units that the parent only listed
(Parquet row groups, Arrow record batches, ranges of text and JSON Lines files), and pieces of
text it read itself (the built-in plays, streamed datasets, and the unit holding the validation
cut). The parent hands them in batches to a pool of ``num_proc`` workers in order (each with its
own tokenizer, inherited on fork); a worker reads and cuts its units itself. The parent writes the
returned token arrays, in order, into shards of exactly ``shard_tokens`` tokens; so the shards are
byte for byte the same for any ``num_proc``. At most ``2 * num_proc + 2`` batches are in flight,
so memory stays flat whatever the corpus size.

The parent's share is what bounds scaling: for file units, only receiving and writing tokens
(about 2 bytes per token), so preparing scales with the cores; ``python -m llm_torch.bench.data``
measures how many workers it can feed.

Each shard is written to a hidden file, its header filled in, fsynced and renamed into place, then
``progress.json`` records the item and token offset where the next shard starts and the bytes
before that item; a new run in the same folder skips the units before that point without reading
them (and the pieces the parent reads without tokenizing them).

One module on purpose: the pool, the ordered shard writer and the resume record are one
protocol, which must stay byte-identical for any ``num_proc`` and any interruption point.
"""

import json
import os
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from multiprocessing import get_context
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from llm_torch.corpus.errors import DataError
from llm_torch.corpus.tables import TableGroup
from llm_torch.data.shards import HEADER_BYTES, header
from llm_torch.data.splits import CorpusSplit, Item, Piece, UnitItem, token_cut, unit_pieces
from llm_torch.tokenizer import Tokenizer

SPLITS: tuple[str, ...] = ("train", "val")

BATCH_CHARS = 1 << 20
"""Characters of text per batch sent to a worker: big enough to amortise the inter-process
copies, small enough that the batches in flight stay a few MB per worker."""


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when every id fits (vocab_size <= 65536), else uint32: half the disk and I/O."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Writes JSON atomically: a temporary file, fsynced, renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Appends tokens to ``<part>_NNNNNN.bin`` shards of exactly ``shard_tokens`` tokens.

    A shard is written to a hidden temporary file, its header filled in once its count is known,
    fsynced and renamed into place; the caller records progress from what ``write`` returns.

    Args:
        folder: Where the shards go.
        part: ``"train"`` or ``"val"`` (the file name prefix).
        dtype: Token dtype (uint16 or uint32).
        shard_tokens: Tokens per shard.
        done: ``[file name, tokens]`` of the shards already complete (when resuming).
    """

    def __init__(
        self, folder: Path, part: str, dtype: np.dtype[Any], shard_tokens: int, done: list[Any]
    ) -> None:
        self.folder = folder
        self.part = part
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.done: list[list[Any]] = [list(entry) for entry in done]  # [[file, tokens], ...]
        self._file: BinaryIO | None = None
        self._count = 0

    @property
    def tokens(self) -> int:
        """Tokens in complete shards plus the open one."""
        return sum(count for _, count in self.done) + self._count

    def write(self, tokens: npt.NDArray[Any]) -> list[int]:
        """Appends ``tokens``; returns, for each shard completed, how many of them it took."""
        closed = []
        position = 0
        while position < len(tokens):
            if self._file is None:
                name = f".{self.part}_{len(self.done):06d}.bin.tmp"
                self._file = (self.folder / name).open("wb")
                self._file.write(bytes(HEADER_BYTES))
            take = min(len(tokens) - position, self.shard_tokens - self._count)
            self._file.write(tokens[position : position + take].data)
            self._count += take
            position += take
            if self._count == self.shard_tokens:
                self.close()
                closed.append(position)
        return closed

    def close(self) -> bool:
        """Completes the open shard (if it holds tokens); returns whether one was completed."""
        file, self._file = self._file, None
        if file is None:
            return False
        with file:
            file.seek(0)
            file.write(header(self.dtype, self._count))
            file.flush()
            os.fsync(file.fileno())
        name = f"{self.part}_{len(self.done):06d}.bin"
        os.replace(Path(file.name), self.folder / name)
        self.done.append([name, self._count])
        self._count = 0
        return True

    def discard(self) -> None:
        """Closes and removes an incomplete shard (after an error)."""
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None


_worker_tokenizer: Tokenizer | None = None
"""The tokenizer of a pool worker process, set once by ``_init_worker``."""


def _init_worker(tokenizer: Tokenizer) -> None:
    """Pool initializer: each worker keeps its own tokenizer (inherited on fork)."""
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def encode_pieces(
    tokenizer: Tokenizer, pieces: Sequence[Piece], dtype: str
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Encodes pieces into one token array (end-of-text after each piece that has one).

    A piece with a ``cut`` (a whole document on both sides of the validation cut) keeps only
    its side's tokens (``splits.token_cut``).

    Returns:
        The tokens in the cache's dtype and each piece's token count (end-of-text included).
    """
    parts: list[npt.NDArray[Any]] = []
    lengths = np.empty(len(pieces), dtype=np.int64)
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    for i, piece in enumerate(pieces):
        text = piece.text
        ids = tokenizer.encode_to_numpy(text).astype(dtype, copy=False) if text else eot[:0]
        if piece.cut is not None:
            split = token_cut(len(ids), piece.cut, len(text))
            ids = ids[split:] if piece.val else ids[:split]
        parts.append(ids)
        if piece.eot:
            parts.append(eot)
        lengths[i] = len(ids) + piece.eot
    tokens = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
    return tokens, lengths


Work = tuple[list[Piece], list[UnitItem]]
"""What a worker is sent: pieces the parent read, or (the other list empty) file units to read."""


class _Batch(NamedTuple):
    """Items sent to a worker together, all of one split, from item ``first`` on.

    Either pieces the parent read (their sizes ``nbytes`` stay in the parent) or file units
    (``units``) that the worker reads; their sizes come back with their tokens.
    """

    first: int
    val: bool
    pieces: list[Piece]
    units: list[UnitItem]

    @property
    def nbytes(self) -> list[int]:
        """The UTF-8 size of each piece."""
        return [piece.nbytes for piece in self.pieces]

    def work(self) -> Work:
        """What a worker needs: the pieces or the units."""
        return self.pieces, self.units


Encoded = tuple[npt.NDArray[Any], npt.NDArray[np.int64], list[int]]
"""A batch's tokens, each item's token count, and each unit's UTF-8 size (empty for pieces)."""


def encode_work(tokenizer: Tokenizer, work: Work, dtype: str, max_chars: int | None) -> Encoded:
    """Encodes a batch's work; units are read and cut into pieces here first (an item each).

    ``max_chars`` is the split's ``piece_chars`` (None: whole documents).
    """
    batch_pieces, units = work
    if batch_pieces:
        return (*encode_pieces(tokenizer, batch_pieces, dtype), [])
    parts, lengths, sizes = [], [], []
    for item in units:
        pieces = list(unit_pieces(item, max_chars))
        tokens, _ = encode_pieces(tokenizer, pieces, dtype)
        parts.append(tokens)
        lengths.append(len(tokens))
        sizes.append(sum(piece.nbytes for piece in pieces))
    return np.concatenate(parts), np.array(lengths, dtype=np.int64), sizes


def _encode_in_worker(work: Work, dtype: str, max_chars: int | None) -> Encoded:
    """``encode_work`` with the worker's own tokenizer."""
    assert _worker_tokenizer is not None
    return encode_work(_worker_tokenizer, work, dtype, max_chars)


def _span(item: Item) -> int:
    """About how many bytes of text an item holds (a table group counts as a whole batch)."""
    if isinstance(item, UnitItem):
        unit = item.unit
        return BATCH_CHARS if isinstance(unit, TableGroup) else unit.stop - unit.start
    return len(item.text)


def batches(items: Iterator[Item], resume: int) -> Iterator[_Batch]:
    """Groups consecutive items of one split and kind into batches of about ``BATCH_CHARS``.

    Items before ``resume`` are skipped (their tokens are in complete shards; the units among
    them are never read), and a batch starts at ``resume`` so that its first item is the one to
    resume in.
    """
    batch: list[Item] = []
    first = resume
    size = 0
    for index, item in enumerate(items):
        if index < resume:
            continue
        if batch and (
            type(item) is not type(batch[0]) or item.val != batch[0].val or size >= BATCH_CHARS
        ):
            yield _batch(first, batch)
            batch, size = [], 0
        if not batch:
            first = index
        batch.append(item)
        size += _span(item)
    if batch:
        yield _batch(first, batch)


def _batch(first: int, items: list[Item]) -> _Batch:
    """A batch of items of one kind and split."""
    pieces = [item for item in items if isinstance(item, Piece)]
    units = [item for item in items if isinstance(item, UnitItem)]
    return _Batch(first, items[0].val, pieces, units)


def _val_encoding_error(err: ValueError) -> DataError:
    """A learned char vocabulary that lacks a validation character."""
    return DataError(
        f"The tokenizer cannot encode the validation text: {err} A char vocabulary is "
        "learned from the training text only. Fix: use a tokenizer with a fixed "
        "vocabulary ('byte' or 'gpt2'), or choose a split whose training part contains "
        "every character (another val_fraction or val_source)."
    )


class _Inline:
    """The one-process path: encodes when its result is asked for, like ``AsyncResult.get``."""

    def __init__(self, tokenizer: Tokenizer, args: tuple[Work, str, int | None]) -> None:
        self.tokenizer = tokenizer
        self.args = args

    def get(self) -> Encoded:
        return encode_work(self.tokenizer, *self.args)


def encode_to_shards(
    split: CorpusSplit,
    tokenizer: Tokenizer,
    work: Path,
    shard_tokens: int,
    num_proc: int,
    progress: bool,
) -> dict[str, Any]:
    """Tokenizes every item into shards in ``work``, resuming from its ``progress.json``.

    Returns:
        Token and byte counts and the shard lists per split.

    Raises:
        DataError: Bad input (from any process), or a validation character missing from a
            learned char vocabulary.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    split.list_units()  # before forking: the workers inherit the listing and pyarrow
    state_path = work / "progress.json"
    state: dict[str, Any] = {
        "item": 0,
        "offset": 0,
        "bytes": {"train": 0, "val": 0},
        "shards": {"train": [], "val": []},
    }
    if state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
    writers = {
        part: ShardWriter(work, part, dtype, shard_tokens, state["shards"][part]) for part in SPLITS
    }
    counts = dict(state["bytes"])  # bytes of the items before the next batch

    def save(item: int, offset: int, nbytes: Mapping[str, int]) -> None:
        shards = {part: writer.done for part, writer in writers.items()}
        record = {"item": item, "offset": offset, "bytes": dict(nbytes), "shards": shards}
        write_json(state_path, record)

    resumed = writers["train"].tokens + writers["val"].tokens
    bar = tqdm(
        total=None,
        initial=resumed,
        unit="tok",
        unit_scale=True,
        desc=f"Tokenizing {split.train.source} ({tokenizer.name}, {num_proc} processes)",
        disable=not progress,
    )
    pool = None
    if num_proc > 1:
        # fork: workers inherit the loaded tokenizer instead of importing and rebuilding it.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = get_context(method).Pool(num_proc, _init_worker, (tokenizer,))
    pending: deque[tuple[AsyncResult[Any] | _Inline, _Batch]] = deque()

    def write_oldest() -> None:
        result, batch = pending.popleft()
        try:
            tokens, lengths, unit_bytes = result.get()
        except ValueError as err:
            if not batch.val or isinstance(err, DataError):
                raise
            raise _val_encoding_error(err) from None
        resuming = batch.first == state["item"] and state["offset"]
        if resuming:  # the first item's tokens up to the offset are in complete shards
            tokens, lengths = tokens[state["offset"] :], lengths.copy()
            lengths[0] -= state["offset"]
        part = "val" if batch.val else "train"
        if batch.val and writers["train"].close():
            save(batch.first, 0, counts)
        closed = writers[part].write(tokens)
        ends = np.cumsum(lengths)
        sizes = np.cumsum([0, *(unit_bytes or batch.nbytes)])
        for taken in closed:  # resume point: the item holding the next token, and the offset
            done = int(np.searchsorted(ends, taken, side="right"))
            offset = taken - (int(ends[done - 1]) if done else 0)
            base = state["offset"] if resuming and done == 0 else 0
            save(
                batch.first + done, offset + base, {**counts, part: counts[part] + int(sizes[done])}
            )
        counts[part] += int(sizes[-1])
        bar.update(len(tokens))

    try:
        with bar:
            if split.val is None:  # the validation cut needs every unit's size
                split.measure(map if pool is None else partial(pool.imap, chunksize=4))
            for batch in batches(split.items(), int(state["item"])):
                args = (batch.work(), dtype.name, split.piece_chars)
                if pool is None:
                    pending.append((_Inline(tokenizer, args), batch))
                else:
                    pending.append((pool.apply_async(_encode_in_worker, args), batch))
                while len(pending) > (2 * num_proc + 2 if pool else 0):
                    write_oldest()
            while pending:
                write_oldest()
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    for writer in writers.values():
        writer.close()
    shards = {part: writer.done for part, writer in writers.items()}
    tokens = {f"{part}_tokens": writer.tokens for part, writer in writers.items()}
    nbytes = {f"{part}_bytes": counts[part] for part in SPLITS}
    return {**tokens, **nbytes, "shards": shards}
