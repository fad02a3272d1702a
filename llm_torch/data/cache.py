"""Tokenizing a corpus once, on every core, into a resumable folder of token shards.

A cache folder holds ``train_000000.bin``, ``train_000001.bin``, ... and ``val_000000.bin``, ...
(llm.c's shard format, see ``shards``: each shard exactly ``shard_tokens`` tokens except the last
of its split; all tokens of a split back to back, each document followed by end-of-text; uint16
when the vocabulary fits, else uint32) and ``meta.json``, the index (tokenizer spec, token counts,
dtype, the shard list, source fingerprints, split point, format version). Its name ends in a hash
of everything that determines its contents, so any change prepares a new folder and an unchanged
source finds the old one without tokenizing anything.

Tokenization runs in ``num_proc`` processes (``encode``); the shards are byte for byte the same
for any ``num_proc``, and memory stays flat whatever the corpus size.

Writes are atomic and resumable: shards are written into ``.<name>.partial`` next to the final
folder, each one renamed into place once complete and fsynced, followed by ``progress.json`` (the
item and token offset where the next shard starts). An interrupted prepare resumes from the last
complete shard: file units before that point are skipped unread (other documents are re-read,
not tokenized). The finished folder
is renamed to its final name last, so a folder under the final name is always complete (and is
still checked against ``meta.json``). Bad input (a ``DataError``) removes the partial folder.

One module on purpose: naming, checking, writing and exporting cache folders (tokenized, or
an index of llm.c shards) share one format.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llm_torch.corpus.errors import DataError
from llm_torch.data import encode
from llm_torch.data.encode import SPLITS, token_dtype, write_json
from llm_torch.data.shards import Shard, read_shard
from llm_torch.data.splits import CorpusSplit
from llm_torch.tokenizer import Tokenizer

FORMAT_VERSION = 2
"""Bump when the layout or meaning of cache files changes (1: one ``train.bin``/``val.bin``;
old folders are never read again, as the version is part of the folder name's hash)."""

SHARD_TOKENS = 100_000_000
"""Tokens per shard: llm.c's size (200 MB of uint16), small enough to write and resume often."""

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


def cache_folder(
    cache_dir: Path,
    split: CorpusSplit,
    tokenizer: TokenizerId,
    shard_tokens: int = SHARD_TOKENS,
) -> Path:
    """The folder for this corpus split and tokenizer: ``<source>-<tokenizer>-<hash>``."""
    identity = {
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer,
        "shard_tokens": shard_tokens,
        **split.identity,
    }
    return _named_folder(cache_dir, split.train.slug, tokenizer, identity)


def index_folder(
    cache_dir: Path, source: str, tokenizer: TokenizerId, identity: Mapping[str, Any]
) -> Path:
    """The folder holding the index of external llm.c shards (no tokens of its own)."""
    name = Path(source.rstrip("*/")).stem or "shards"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "shards"
    key = {"format_version": FORMAT_VERSION, "tokenizer": tokenizer, "shards": dict(identity)}
    return _named_folder(cache_dir, slug, tokenizer, key)


def _named_folder(
    cache_dir: Path, slug: str, tokenizer: TokenizerId, identity: Mapping[str, Any]
) -> Path:
    """``<slug>-<tokenizer name>-<hash of identity>`` under ``cache_dir``."""
    key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8)
    name = tokenizer if isinstance(tokenizer, str) else str(tokenizer["name"])
    return cache_dir / f"{slug}-{name}-{key.hexdigest()}"


def _corrupt(folder: Path, problem: str) -> DataError:
    """The error for an unusable cache folder; deleting it lets the next run rebuild it."""
    return DataError(
        f"The data cache {str(folder)!r} is unusable: {problem}. Fix: delete that folder "
        "(`rm -r` it) and run again to rebuild it."
    )


def shard_list(folder: Path, meta: Mapping[str, Any], part: str) -> list[Shard]:
    """The shards of split ``part`` listed in ``meta`` (paths relative to ``folder`` or absolute).

    Raises:
        DataError: A listed shard is missing, has a bad header, or disagrees with the index.
    """
    shards = []
    for name, count in meta["shards"][part]:
        try:
            shard = read_shard(folder / name)
        except DataError as err:
            raise _corrupt(folder, f"shard {name} is bad ({err})") from None
        if shard.tokens != count or shard.dtype != meta["dtype"]:
            raise _corrupt(
                folder,
                f"shard {name} holds {shard.tokens} {shard.dtype} tokens but meta.json says "
                f"{count} {meta['dtype']} tokens: it is truncated or corrupt",
            )
        shards.append(shard)
    return shards


def read_meta(folder: Path, tokenizer: TokenizerId, identity: Mapping[str, Any]) -> dict[str, Any]:
    """Reads and checks a cache folder's ``meta.json`` and every shard's header and size.

    Args:
        folder: The cache folder.
        tokenizer: The expected tokenizer spec, or ``"char"`` (any learned char vocabulary).
        identity: What the cache must have been built from (``CorpusSplit.identity``).

    Raises:
        DataError: Missing or unreadable meta, another format version, tokenizer or source, or a
            shard whose size disagrees with its token count (truncated or corrupt).
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
    if meta.get("identity") != dict(identity):
        raise _corrupt(folder, "it was written from another source or split settings")
    try:
        for part in SPLITS:
            listed = sum(count for _, count in meta["shards"][part])
            if listed != int(meta[f"{part}_tokens"]):
                raise ValueError(
                    f"{part} shards hold {listed} tokens, not {meta[part + '_tokens']}"
                )
            shard_list(folder, meta, part)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise _corrupt(folder, f"its shards or meta.json are incomplete ({err!r})") from None
    return meta


def _fsync_dir(folder: Path) -> None:
    """Makes a folder's entries (created or renamed files) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` (two processes never write one partial folder)."""
    with path.open("a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def build_cache(
    folder: Path,
    split: CorpusSplit,
    tokenizer: Tokenizer,
    num_proc: int | None = None,
    progress: bool = True,
    shard_tokens: int = SHARD_TOKENS,
) -> dict[str, Any]:
    """Tokenizes ``split`` into ``folder`` (resuming an interrupted run) and returns its meta.

    Args:
        folder: Final cache folder (``cache_folder``).
        split: The corpus split to tokenize.
        tokenizer: The tokenizer (for "char", one already learned from the training text).
        num_proc: Tokenizer processes; defaults to the CPUs this process may use.
        progress: Show a tqdm progress bar (tokens, tokens/s).
        shard_tokens: Tokens per shard.

    Raises:
        ValueError: ``split`` cuts documents but ``tokenizer`` is not ``cut_safe``.
        DataError: Bad input found while reading (the partial folder is removed).
    """
    if split.cut_documents and not tokenizer.cut_safe:
        raise ValueError(
            f"The corpus split cuts documents inside, but tokenizer {tokenizer.name!r} is not "
            "cut-safe (its pieces need not encode as in the whole text). Fix: build the split "
            "with CorpusSplit(..., cut_documents=tokenizer.cut_safe)."
        )
    num_proc = num_proc or available_cpus()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f".{folder.name}.partial"
    lock = folder.parent / f".{folder.name}.lock"
    with _locked(lock):
        if (folder / "meta.json").exists():  # another process finished it while we waited
            return read_meta(folder, tokenizer.spec, split.identity)
        work.mkdir(exist_ok=True)
        try:
            counts = encode.encode_to_shards(
                split, tokenizer, work, shard_tokens, num_proc, progress
            )
        except DataError:
            shutil.rmtree(work, ignore_errors=True)
            lock.unlink(missing_ok=True)
            raise
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "tokenizer": tokenizer.spec,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            **counts,
            "shard_tokens": shard_tokens,
            "source": split.train.source,
            "val_source": None if split.val is None else split.val.source,
            "split_point": None if split.split_point is None else vars(split.split_point),
            "identity": split.identity,
        }
        write_json(work / "meta.json", meta)
        (work / "progress.json").unlink()
        _fsync_dir(work)
        os.rename(work, folder)
        _fsync_dir(folder.parent)
        lock.unlink()  # a process still waiting on it finds the finished folder
    return meta


def write_shard_index(
    folder: Path, tokenizer: Tokenizer, identity: Mapping[str, Any], shards: Mapping[str, Any]
) -> dict[str, Any]:
    """Writes the index of external llm.c shards (read as-is) as a cache folder's ``meta.json``.

    Args:
        folder: The cache folder to create.
        tokenizer: The tokenizer the shards were made with (already checked against them).
        identity: Fingerprints of the shard files.
        shards: ``{"train": [Shard, ...], "val": [...]}``.
    """
    dtypes = {shard.dtype for part in SPLITS for shard in shards[part]}
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer.spec,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.eot_id,
        "dtype": dtypes.pop() if len(dtypes) == 1 else "mixed",
        **{f"{part}_tokens": sum(s.tokens for s in shards[part]) for part in SPLITS},
        "shards": {
            part: [[str(s.path.absolute()), s.tokens] for s in shards[part]] for part in SPLITS
        },
        "identity": dict(identity),
    }
    if meta["dtype"] == "mixed":
        raise DataError(
            "The training and validation shards mix uint16 and uint32 tokens. Fix: use shards "
            "of one tokenizer for both."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.partial"
    tmp.mkdir(exist_ok=True)
    write_json(tmp / "meta.json", meta)
    with contextlib.suppress(OSError):  # another rank wrote the same index first
        os.rename(tmp, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return meta


def export_shards(folder: Path, meta: Mapping[str, Any], dest: Path, prefix: str) -> list[Path]:
    """Copies a cache's shards to ``dest`` under llm.c's names, each copy atomic.

    The cache's shards are already in llm.c's format, so this is a plain copy:
    ``<prefix>_val_000000.bin``, ``<prefix>_train_000000.bin``, ... (llm.c and modded-nanogpt
    pick files by such globs).

    Returns:
        The written files, validation first.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for part in ("val", "train"):
        for index, shard in enumerate(shard_list(folder, meta, part)):
            target = dest / f"{prefix}_{part}_{index:06d}.bin"
            tmp = dest / f".{target.name}.tmp"
            shutil.copyfile(shard.path, tmp)
            os.replace(tmp, target)
            written.append(target)
    return written
