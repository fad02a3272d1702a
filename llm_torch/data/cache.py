"""Tokenizing a corpus once into a cache folder of flat token files.

A cache folder holds ``train.bin`` and ``val.bin`` (all tokens of a split, back to back, each
document followed by end-of-text; uint16 when the vocabulary fits, else uint32) and
``meta.json`` (tokenizer spec, token counts, dtype, source fingerprints, split point, format
version). Its name ends in a hash of everything that determines its contents (source contents,
tokenizer, split settings, format version), so any change prepares a new folder and an unchanged
source finds the old one without tokenizing anything.

Writes are atomic: everything is written and fsynced in a temporary folder next to the final one,
which is then renamed into place. A crash leaves at most a ``.*.tmp`` folder that is never read;
a folder under the final name is always complete (and is still checked against ``meta.json``).
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from llm_torch.data.errors import DataError
from llm_torch.data.splits import CorpusSplit, Piece
from llm_torch.tokenizer import Tokenizer

FORMAT_VERSION = 1
"""Bump when the layout or meaning of cache files changes."""

SPLITS: tuple[str, ...] = ("train", "val")

TokenizerId = str | Mapping[str, Any]
"""A tokenizer as it enters the cache key: its spec, or ``"char"`` for a vocabulary still to be
learned from the data (the vocabulary is a function of the key's other parts)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/llm_torch/data`` (``~/.cache/llm_torch/data`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "llm_torch" / "data"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 when every id fits (vocab_size <= 65536), else uint32: half the disk and I/O."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def cache_folder(cache_dir: Path, split: CorpusSplit, tokenizer: TokenizerId) -> Path:
    """The folder for this corpus split and tokenizer: ``<source>-<tokenizer>-<hash>``."""
    identity = {"format_version": FORMAT_VERSION, "tokenizer": tokenizer, **split.identity}
    key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8)
    name = tokenizer if isinstance(tokenizer, str) else str(tokenizer["name"])
    return cache_dir / f"{split.train.slug}-{name}-{key.hexdigest()}"


def _corrupt(folder: Path, problem: str) -> DataError:
    """The error for an unusable cache folder; deleting it lets the next run rebuild it."""
    return DataError(
        f"The data cache {str(folder)!r} is unusable: {problem}. Fix: delete that folder "
        "(`rm -r` it) and run again to rebuild it."
    )


def read_meta(folder: Path, tokenizer: TokenizerId, split: CorpusSplit) -> dict[str, Any]:
    """Reads and checks a cache folder's ``meta.json`` and token file sizes.

    Args:
        folder: The cache folder.
        tokenizer: The expected tokenizer spec, or ``"char"`` (any learned char vocabulary).
        split: The corpus split the cache must have been built from.

    Raises:
        DataError: Missing or unreadable meta, another format version, tokenizer or source, or a
            token file whose size disagrees with its token count (truncated or corrupt).
    """
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise _corrupt(folder, f"meta.json cannot be read ({err})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise _corrupt(
            folder,
            f"it was written in cache format version {meta.get('format_version')!r} and this "
            f"version of llm-torch reads format {FORMAT_VERSION}",
        )
    found = meta.get("tokenizer")
    name = tokenizer if isinstance(tokenizer, str) else tokenizer.get("name")
    if (
        not isinstance(found, dict)
        or found.get("name") != name
        or (not isinstance(tokenizer, str) and found != dict(tokenizer))
    ):
        raise _corrupt(folder, f"it was written by tokenizer {found!r}, not {tokenizer!r}")
    if meta.get("identity") != split.identity:
        raise _corrupt(folder, "it was written from another source or split settings")
    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        expected = {part: int(meta[f"{part}_tokens"]) * itemsize for part in SPLITS}
        sizes = {part: (folder / f"{part}.bin").stat().st_size for part in SPLITS}
    except (KeyError, TypeError, ValueError, OSError) as err:
        raise _corrupt(folder, f"its token files or meta.json are incomplete ({err!r})") from None
    for part in SPLITS:
        if sizes[part] != expected[part]:
            raise _corrupt(
                folder,
                f"{part}.bin holds {sizes[part]} bytes but meta.json says {meta[f'{part}_tokens']} "
                f"{meta['dtype']} tokens ({expected[part]} bytes): it is truncated or corrupt",
            )
    return meta


def _array_encoder(tokenizer: Tokenizer, dtype: np.dtype[Any]) -> Callable[[str], npt.NDArray[Any]]:
    """Returns text -> token array in the cache's dtype, never through a Python list.

    tiktoken releases the GIL while encoding, so these calls run in parallel in threads.
    """
    return lambda text: tokenizer.encode_to_numpy(text).astype(dtype, copy=False)


def _fsync_dir(folder: Path) -> None:
    """Makes a folder's entries (created or renamed files) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tokenize(
    split: CorpusSplit,
    tokenizer: Tokenizer,
    outputs: tuple[BinaryIO, BinaryIO],
    threads: int,
    progress: bool,
) -> dict[str, int]:
    """Tokenizes every piece in parallel and appends the tokens, in order, to train/val outputs.

    At most ``4 * threads`` pieces are in flight, so memory does not grow with the corpus.

    Returns:
        Token and byte counts per split.

    Raises:
        DataError: A validation character is missing from a learned char vocabulary.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    encode = _array_encoder(tokenizer, dtype)
    eot = np.array([tokenizer.eot_id], dtype=dtype)
    counts = dict.fromkeys(("train_tokens", "val_tokens", "train_bytes", "val_bytes"), 0)
    pending: deque[tuple[Future[npt.NDArray[Any]], Piece]] = deque()
    bar = tqdm(
        total=split.total_bytes,
        unit="B",
        unit_scale=True,
        desc=f"Tokenizing {split.train.source} ({tokenizer.name})",
        disable=not progress,
    )

    def write_oldest() -> None:
        future, piece = pending.popleft()
        try:
            ids = future.result()
        except ValueError as err:
            if not piece.val:
                raise
            raise DataError(
                f"The tokenizer cannot encode the validation text: {err} A char vocabulary is "
                "learned from the training text only. Fix: use a tokenizer with a fixed "
                "vocabulary ('byte' or 'gpt2'), or choose a split whose training part contains "
                "every character (another val_fraction or val_source)."
            ) from None
        prefix = "val" if piece.val else "train"
        out = outputs[piece.val]
        out.write(ids.data)
        if piece.eot:
            out.write(eot.data)
        counts[f"{prefix}_tokens"] += len(ids) + piece.eot
        counts[f"{prefix}_bytes"] += piece.nbytes
        bar.update(piece.nbytes)

    with bar, ThreadPoolExecutor(max_workers=threads) as pool:
        try:
            for piece in split.pieces():
                pending.append((pool.submit(encode, piece.text), piece))
                if len(pending) >= 4 * threads:
                    write_oldest()
            while pending:
                write_oldest()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return counts


def build_cache(
    folder: Path,
    split: CorpusSplit,
    tokenizer: Tokenizer,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenizes ``split`` into ``folder`` atomically and returns its meta.

    Args:
        folder: Final cache folder (``cache_folder``); it must not exist yet.
        split: The corpus split to tokenize.
        tokenizer: The tokenizer (for "char", one already learned from the training text).
        threads: Tokenizer threads; defaults to the CPUs this process may use.
        progress: Show a tqdm progress bar (bytes processed).

    Raises:
        DataError: Bad input found while reading (the temporary folder is removed).
    """
    threads = threads or available_cpus()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with (tmp / "train.bin").open("wb") as train, (tmp / "val.bin").open("wb") as val:
            counts = _tokenize(split, tokenizer, (train, val), threads, progress)
            for file in (train, val):
                file.flush()
                os.fsync(file.fileno())
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "tokenizer": tokenizer.spec,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            **counts,
            "source": split.train.source,
            "val_source": None if split.val is None else split.val.source,
            "split_point": None if split.split_point is None else vars(split.split_point),
            "identity": split.identity,
        }
        with (tmp / "meta.json").open("w", encoding="utf-8") as meta_file:
            json.dump(meta, meta_file, indent=2)
            meta_file.flush()
            os.fsync(meta_file.fileno())
        _fsync_dir(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "meta.json").exists():
                raise
            # Another process finished the same cache first; its files are identical: keep them.
        _fsync_dir(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta
