"""Token shards in llm.c's ``.bin`` format: the cache's files, and a source read as-is.

A shard is a header of 256 little-endian int32 followed by its tokens. ``header[0]`` is the magic
and ``header[1]`` the version, which give the token width: 20240520 / 1 for uint16 (GPT-2 ids,
``dev/data/fineweb.py`` in llm.c, modded-nanogpt's shards) and 20240801 / 7 for uint32 (Llama 3
ids); ``header[2]`` is the token count. llm-torch writes its caches in this same format, so llm.c
and modded-nanogpt can train on them, and reads their shards without tokenizing anything.

``TokenStream`` joins shards into one stream of tokens: training windows may cross shard
boundaries, and positions in the stream do not depend on how it was cut into files.
"""

import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from llm_torch.corpus.errors import DataError

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
FORMATS: dict[str, tuple[int, int]] = {"uint16": (20240520, 1), "uint32": (20240801, 7)}
"""Token dtype -> (magic, version) of llm.c's header."""
_DTYPES = {format_: dtype for dtype, format_ in FORMATS.items()}


class Shard(NamedTuple):
    """One shard: its file, token dtype name and token count."""

    path: Path
    dtype: str
    tokens: int


def header(dtype: np.dtype[Any] | str, count: int) -> bytes:
    """llm.c's 1024-byte header for ``count`` tokens of ``dtype``."""
    magic, version = FORMATS[np.dtype(dtype).name]
    ints = np.zeros(HEADER_INTS, dtype="<i4")
    ints[:3] = (magic, version, count)
    return ints.tobytes()


def read_shard(path: Path) -> Shard:
    """Reads and checks a shard's header against its file size.

    Raises:
        DataError: Unreadable file, unknown magic/version, or a count that disagrees with the size.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(HEADER_BYTES)
        size = path.stat().st_size
    except OSError as err:
        raise DataError(
            f"Cannot read the token shard {str(path)!r}: {err}. Fix: check that the file "
            "exists and is readable, or remove it from the source."
        ) from None
    if len(raw) < HEADER_BYTES:
        raise DataError(
            f"{path} is {size} bytes, shorter than llm.c's {HEADER_BYTES}-byte header. Fix: "
            "re-download or re-export it (it is truncated or not a token shard)."
        )
    magic, version, count = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    dtype = _DTYPES.get((magic, version))
    if dtype is None:
        known = ", ".join(f"{m} v{v} ({d})" for d, (m, v) in FORMATS.items())
        raise DataError(
            f"{path} has magic {magic} and version {version}, not an llm.c token shard "
            f"({known}). Fix: pass shards written by llm.c, modded-nanogpt or export_shards."
        )
    expected = HEADER_BYTES + count * np.dtype(dtype).itemsize
    if count < 0 or size != expected:
        raise DataError(
            f"{path}: the header says {count} {dtype} tokens ({expected} bytes with the header) "
            f"but the file holds {size} bytes. Fix: re-download or re-export the shard (it is "
            "truncated or corrupt)."
        )
    return Shard(path, dtype, count)


def is_shard_source(source: str) -> bool:
    """Whether a source string names llm.c token shards (a ``.bin`` file or glob)."""
    return source.lower().endswith(".bin")


def resolve_shards(source: str) -> list[Shard]:
    """The checked shards of a ``.bin`` file or glob, sorted by path.

    Raises:
        DataError: Nothing matches, a shard is bad, or the shards mix uint16 and uint32 tokens.
    """
    expanded = os.path.expanduser(source)
    paths = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
    if not paths:
        raise DataError(
            f"The token shard source {source!r} matches no .bin file. Fix: check the path or "
            "glob, e.g. 'fineweb10B/fineweb_train_*.bin'."
        )
    shards = [read_shard(path) for path in paths]
    widths = {shard.dtype for shard in shards}
    if len(widths) > 1:
        by_width = {d: next(s.path.name for s in shards if s.dtype == d) for d in sorted(widths)}
        raise DataError(
            f"The shards of {source!r} mix token widths ({by_width}). Fix: use shards of one "
            "tokenizer only (uint16 for GPT-2, uint32 for Llama 3)."
        )
    return shards


def fingerprint(shards: Sequence[Shard]) -> str:
    """Hash of the shards' names, sizes and first and last MiB.

    Sampled, not read in full: every rank computes it at every start, and shards are written once
    (a rewritten shard changes its header and usually its ends).
    """
    digest = hashlib.blake2b(digest_size=16)
    sample = 1 << 20
    for shard in shards:
        size = shard.path.stat().st_size
        digest.update(f"{shard.path.name}\0{size}\0".encode("utf-8", "surrogateescape"))
        with shard.path.open("rb") as file:
            digest.update(file.read(sample))
            file.seek(max(0, size - sample))
            digest.update(file.read(sample))
    return digest.hexdigest()


def check_vocabulary(shards: Sequence[Shard], vocab_size: int, tokenizer: str) -> None:
    """Refuses shards holding ids outside ``range(vocab_size)`` (another tokenizer's shards).

    Reads every token once, 16M at a time, so memory stays flat.

    Raises:
        DataError: The first shard with an out-of-range id.
    """
    step = 1 << 24
    for shard in shards:
        if shard.tokens == 0:
            continue
        tokens = np.memmap(
            shard.path, dtype=shard.dtype, mode="r", offset=HEADER_BYTES, shape=(shard.tokens,)
        )
        top = max(int(tokens[i : i + step].max()) for i in range(0, shard.tokens, step))
        if top >= vocab_size:
            raise DataError(
                f"{shard.path} holds token id {top}, outside the vocabulary of tokenizer "
                f"{tokenizer!r} ({vocab_size} ids). Fix: set data.tokenizer to the tokenizer the "
                "shards were made with (gpt2 for llm.c's GPT-2 shards)."
            )


class TokenStream:
    """Shards read as one stream of tokens, each memory-mapped on first use in each process.

    Pickling keeps only the paths, so DataLoader workers map the files themselves.

    Args:
        shards: The shards, in stream order (all of one dtype).
    """

    def __init__(self, shards: Sequence[Shard]) -> None:
        if not shards:
            raise ValueError("A token stream needs at least one shard.")
        self.shards = list(shards)
        self.dtype = np.dtype(self.shards[0].dtype)
        self.bounds = np.cumsum([0, *(shard.tokens for shard in self.shards)], dtype=np.int64)
        self._maps: dict[int, npt.NDArray[Any]] = {}

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def _map(self, index: int) -> npt.NDArray[Any]:
        """The read-only memory map of shard ``index``."""
        tokens = self._maps.get(index)
        if tokens is None:
            shard = self.shards[index]
            tokens = np.memmap(
                shard.path, dtype=self.dtype, mode="r", offset=HEADER_BYTES, shape=(shard.tokens,)
            )
            self._maps[index] = tokens
        return tokens

    def read(self, start: int, stop: int) -> npt.NDArray[Any]:
        """Tokens ``[start, stop)`` of the stream, across shard boundaries."""
        first = int(np.searchsorted(self.bounds, start, side="right")) - 1
        parts = []
        index = first
        while start < stop:
            base = int(self.bounds[index])
            end = min(stop, int(self.bounds[index + 1]))
            parts.append(self._map(index)[start - base : end - base])
            start = end
            index += 1
        if not parts:
            return np.empty(0, dtype=self.dtype)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def windows(self, starts: npt.NDArray[np.int64], length: int) -> npt.NDArray[Any]:
        """``(len(starts), length)`` windows; one vectorised gather per shard touched.

        A window crossing a shard boundary (rare: at most one per boundary) is read on its own.
        """
        offsets = np.arange(length)
        if len(self.shards) == 1:
            return self._map(0)[starts[:, None] + offsets]
        out = np.empty((len(starts), length), dtype=self.dtype)
        index = np.searchsorted(self.bounds, starts, side="right") - 1
        inside = starts + length <= self.bounds[index + 1]
        for shard in np.unique(index[inside]):
            rows = inside & (index == shard)
            local = starts[rows] - self.bounds[shard]
            out[rows] = self._map(int(shard))[local[:, None] + offsets]
        for row in np.flatnonzero(~inside):
            out[row] = self.read(int(starts[row]), int(starts[row]) + length)
        return out
