"""Tokenization throughput, scaling and memory of ``prepare_data``'s pipeline, next to tiktoken.

Run ``python -m llm_torch.bench.data`` (``--help`` for options). It measures, for the built-in
corpus and for synthetic corpora (default 200 MB, written to a temporary folder by repeating the
plays in shuffled orders): a ``.txt`` case (10 MB single-document files), a Parquet case
(FineWeb-like rows of about 4 kB, 1,000 rows per row group, 100 MB files) and a JSON Lines case
(the same rows):

- the full pipeline (``cache.build_cache``: read, decode, cut, tokenize in ``--num_proc``
  processes, write shards), with the GPT-2 tokenizer, once per ``--num_proc`` value, and the
  speed-up over one process;
- tiktoken's own ``encode_ordinary_batch`` on one thread, on the same text cut naively into
  pieces of the same size, timing only the encode calls: one core's speed to aim for.

Each measurement runs in a fresh process, so its peak resident memory (Linux's ``VmHWM``, else
``getrusage``'s ``ru_maxrss``) is its own; "RSS base" is that process's peak after imports (torch
and Lightning), before any work, and "RSS workers" the largest peak of its tokenizer processes.
Flat memory means the peaks do not grow with the corpus size: ``--synthetic-mb 1000`` checks the
1.5 GB bound on a 1 GB corpus (``--tmp`` picks where it is written; it is deleted afterwards).

The profile columns give the parent's seconds spent reading and cutting text (``read``; for
Parquet: listing row groups and sizing them in the workers), waiting for the workers (``wait``)
and writing shards (``write``), timed from outside the pipeline (``phase_seconds``). The parent
is the only serial part, so tokenization scales
linearly with processes until the workers together outrun it. "parent alone" times that serial
part by itself (text to batches or row groups listed, the pickling both ways, shard writes, with
tokenization replaced by a zero array); "parent feeds" divides its rate by one worker's.

One module on purpose: the synthetic corpora, the measurements and the table are the
benchmark, read together.
"""

import argparse
import contextlib
import functools
import json
import multiprocessing.pool
import pickle
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from llm_torch.corpus import shakespeare
from llm_torch.corpus.sources import resolve_source
from llm_torch.data import encode
from llm_torch.data.cache import available_cpus, build_cache, cache_folder
from llm_torch.data.splits import MAX_PIECE_CHARS, CorpusSplit
from llm_torch.tokenizer import get_tokenizer
from llm_torch.tokenizer.bpe import TIKTOKEN_ENCODINGS, load_encoding

FILE_BYTES = 10 * 2**20
"""Size of each synthetic file (one document each, so documents are far larger than a piece)."""

DOC_BYTES = 4000
"""Typical size of a synthetic Parquet row (FineWeb's documents are a few kB)."""

PARQUET_ROWS = 25_000
"""Rows per synthetic Parquet file (about 100 MB)."""


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's ``VmHWM`` when available: ``ru_maxrss`` would include the parent's peak, which a
    spawned child inherits across fork and exec.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def write_synthetic_corpus(folder: Path, megabytes: int, seed: int = 0) -> Path:
    """Writes about ``megabytes`` MB of play text, shuffled per file, and returns the folder."""
    plays = [shakespeare.read_play(path) for path in shakespeare.play_paths()]
    rng = random.Random(seed)
    written = 0
    index = 0
    while written < megabytes * 10**6:
        parts: list[str] = []
        size = 0
        while size < FILE_BYTES:
            order = rng.sample(plays, len(plays))
            parts += order
            size += sum(len(play) for play in order)
        data = "".join(parts).encode("utf-8")[:FILE_BYTES]
        data = data.decode("utf-8", "ignore").encode("utf-8")  # never end mid-character
        (folder / f"part-{index:04d}.txt").write_bytes(data)
        written += len(data)
        index += 1
    return folder


def synthetic_rows(megabytes: int, seed: int = 0) -> Iterator[list[str]]:
    """Yields about ``megabytes`` MB of play text in lists of ``PARQUET_ROWS`` documents.

    Each document is about ``DOC_BYTES`` (FineWeb's are a few kB); each list makes one file.
    """
    plays = [shakespeare.read_play(path) for path in shakespeare.play_paths()]
    rng = random.Random(seed)
    written = 0
    rows: list[str] = []
    while True:
        for play in rng.sample(plays, len(plays)):
            for start in range(0, len(play), DOC_BYTES):
                rows.append(play[start : start + DOC_BYTES])
                written += len(rows[-1].encode("utf-8"))
                if len(rows) == PARQUET_ROWS or written >= megabytes * 10**6:
                    yield rows
                    rows = []
                if written >= megabytes * 10**6:
                    return


def write_synthetic_parquet(folder: Path, megabytes: int, seed: int = 0) -> Path:
    """Writes ``synthetic_rows`` as Parquet files (row groups of 1,000, as FineWeb's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for index, rows in enumerate(synthetic_rows(megabytes, seed)):
        path = folder / f"part-{index:04d}.parquet"
        # No dictionary: the repeated plays would shrink to a dictionary that real corpora
        # (FineWeb) never have.
        pq.write_table(pa.table({"text": rows}), path, row_group_size=1000, use_dictionary=False)
    return folder


def write_synthetic_jsonl(folder: Path, megabytes: int, seed: int = 0) -> Path:
    """Writes ``synthetic_rows`` as JSON Lines files."""
    for index, rows in enumerate(synthetic_rows(megabytes, seed)):
        lines = "".join(json.dumps({"text": row}) + "\n" for row in rows)
        (folder / f"part-{index:04d}.jsonl").write_text(lines, encoding="utf-8")
    return folder


def _children_peak_rss_mb() -> float:
    """Largest peak resident memory of this process's finished children, in MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _result(
    nbytes: int, tokens: int, seconds: float, rss_base: float, rss_workers: float = 0.0
) -> dict[str, Any]:
    """One measurement: its size, time and memory (this process's peak so far)."""
    return {
        "bytes": nbytes,
        "tokens": tokens,
        "seconds": seconds,
        "rss_base": rss_base,
        "rss_peak": _peak_rss_mb(),
        "rss_workers": rss_workers,
    }


@contextlib.contextmanager
def phase_seconds() -> Iterator[dict[str, float]]:
    """Times the parent's phases of ``build_cache`` from outside, by wrapping what does them.

    ``read``: producing batches (``encode.batches``) and sizing the units for the validation cut
    (``CorpusSplit.measure``); ``wait``: waiting for a batch's tokens (a pool result's ``get``;
    with one process, ``encode.encode_work`` itself); ``write``: ``ShardWriter.write``. The
    wrappers are process-wide, hence only in a measurement's own process
    (``_in_fresh_process``). Yields the seconds, filled in as the phases run.
    """
    seconds = {"read": 0.0, "wait": 0.0, "write": 0.0}
    original_batches = encode.batches

    def timed(phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start

        return wrapper

    def timed_batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
        produced = original_batches(*args, **kwargs)
        while True:
            start = time.perf_counter()
            batch = next(produced, None)
            seconds["read"] += time.perf_counter() - start
            if batch is None:
                return
            yield batch

    wrapped = [
        (encode, "batches", timed_batches),
        (CorpusSplit, "measure", timed("read", CorpusSplit.measure)),
        (
            multiprocessing.pool.ApplyResult,
            "get",
            timed("wait", multiprocessing.pool.ApplyResult.get),
        ),
        (encode, "encode_work", timed("wait", encode.encode_work)),
        (encode.ShardWriter, "write", timed("write", encode.ShardWriter.write)),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, wrapper in wrapped:
            stack.enter_context(mock.patch.object(owner, name, wrapper))
        yield seconds


def measure_pipeline(source: str, tokenizer_name: str, num_proc: int) -> dict[str, Any]:
    """Prepares a cache in a temporary folder; returns size, tokens, seconds, memory, profile."""
    base = _peak_rss_mb()
    tokenizer = get_tokenizer(tokenizer_name)
    split = CorpusSplit(resolve_source(source), None, 0.1, cut_documents=tokenizer.cut_safe)
    with tempfile.TemporaryDirectory() as tmp, phase_seconds() as profile:
        start = time.perf_counter()
        folder = cache_folder(Path(tmp), split, tokenizer.spec)  # hashes the source
        meta = build_cache(folder, split, tokenizer, num_proc=num_proc, progress=False)
        seconds = time.perf_counter() - start
    total = meta["train_bytes"] + meta["val_bytes"], meta["train_tokens"] + meta["val_tokens"]
    return {**_result(*total, seconds, base, _children_peak_rss_mb()), **profile}


def measure_parent(source: str, tokenizer_name: str, num_proc: int) -> dict[str, Any]:
    """Times the parent's serial work alone: the part that does not scale with processes.

    It reads and cuts the text into batches (file units: only lists them), pickles each
    batch's work as the pool would, unpickles a token array of the size a worker returns and
    writes shards. Tokenization is replaced by a zero array of one token per 3.3 bytes (GPT-2 on
    English), so this is the rate that ``num_proc`` workers can be fed at: the pipeline scales
    linearly until the workers together tokenize this fast.
    """
    base = _peak_rss_mb()
    cut_safe = get_tokenizer(tokenizer_name).cut_safe
    split = CorpusSplit(resolve_source(source), None, 0.1, cut_documents=cut_safe)
    _ = split.identity, split.total_bytes  # hashing and sizing happen once, before tokenizing
    unit_bytes = split.train.unit_sizes()  # what workers report back for their units
    size = tokens = 0
    with tempfile.TemporaryDirectory() as tmp:
        writer = encode.ShardWriter(Path(tmp), "train", np.dtype(np.uint16), 10**8, [])
        start = time.perf_counter()
        for batch in encode.batches(split.items(), 0):
            pickle.loads(pickle.dumps(batch.work(), pickle.HIGHEST_PROTOCOL))
            nbytes = sum(batch.nbytes) + sum(unit_bytes[item.unit][0] for item in batch.units)
            array = np.zeros(int(nbytes / 3.3), dtype=np.uint16)
            writer.write(pickle.loads(pickle.dumps(array, pickle.HIGHEST_PROTOCOL)))
            size += nbytes
            tokens += len(array)
        writer.close()
        seconds = time.perf_counter() - start
    return _result(size, tokens, seconds, base)


def _raw_batches(source: str, batch_pieces: int) -> Iterator[list[str]]:
    """The corpus cut naively into pieces of ``MAX_PIECE_CHARS``, ``batch_pieces`` at a time."""
    batch: list[str] = []
    size = 0
    for text in resolve_source(source).texts():
        size += len(text)
        if size > 50 * 10**6:
            break
        for start in range(0, len(text), MAX_PIECE_CHARS):
            batch.append(text[start : start + MAX_PIECE_CHARS])
            if len(batch) == batch_pieces:
                yield batch
                batch = []
    if batch:
        yield batch


def measure_tiktoken(source: str, tokenizer_name: str, threads: int) -> dict[str, Any]:
    """Times tiktoken's ``encode_ordinary_batch`` alone on the same text (no I/O, no writes).

    Only the first 50 MB: enough for a steady speed.
    """
    base = _peak_rss_mb()
    encoding = load_encoding(TIKTOKEN_ENCODINGS[tokenizer_name])
    seconds = 0.0
    size = tokens = 0
    for batch in _raw_batches(source, batch_pieces=8 * threads):
        start = time.perf_counter()
        ids = encoding.encode_ordinary_batch(batch, num_threads=threads)
        seconds += time.perf_counter() - start
        size += sum(len(text.encode("utf-8")) for text in batch)
        tokens += sum(map(len, ids))
    return _result(size, tokens, seconds, base)


def _control_job(text: str) -> float:
    """Seconds to encode ``text`` with GPT-2 in this process (a fixed amount of CPU work)."""
    encoding = load_encoding(TIKTOKEN_ENCODINGS["gpt2"])
    start = time.perf_counter()
    encoding.encode_ordinary(text)
    return time.perf_counter() - start


def measure_capacity(copies: int) -> float:
    """How much faster ``copies`` concurrent copies of one job run than one copy, right now.

    The ceiling of any ``num_proc=copies`` speed-up at that moment: below ``copies`` when other
    work shares the CPUs, which makes speed-ups measured on a busy machine comparable.
    """
    plays = [shakespeare.read_play(path) for path in shakespeare.play_paths()]
    text = "".join(plays)[: 3 * 10**6]
    with get_context("fork").Pool(copies) as pool:
        pool.map(_control_job, [text[:1000]] * copies)  # start and warm the workers
        alone = pool.apply(_control_job, (text,))
        start = time.perf_counter()
        pool.map(_control_job, [text] * copies, chunksize=1)
        together = time.perf_counter() - start
    return copies * alone / together


def _in_fresh_process(
    function: Callable[[str, str, int], dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """Runs ``function(*args)`` in a new process so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _row(name: str, what: str, result: dict[str, Any], reference: float | None) -> str:
    """One table row: size, tokens, time, speeds, memory, speed-up and the parent's profile."""
    tokens_per_s = result["tokens"] / result["seconds"] / 1e6
    ratio = f"{tokens_per_s / reference:6.2f}x" if reference else "      -"
    profile = "-"
    if "read" in result:
        profile = (
            f"read {result['read']:.1f}, wait {result['wait']:.1f}, write {result['write']:.2f}"
        )
    return (
        f"{name:<16} {what:<24} {result['bytes'] / 1e6:8.1f} {result['tokens'] / 1e6:8.2f} "
        f"{result['seconds']:8.2f} {result['bytes'] / result['seconds'] / 1e6:7.2f} "
        f"{tokens_per_s:7.3f} {result['rss_base']:8.0f} {result['rss_peak']:8.0f} "
        f"{result['rss_workers']:8.0f} {ratio}  {profile}"
    )


def _measure_scaling(
    name: str,
    source: str,
    tokenizer: str,
    counts: list[int],
    repeats: int,
    parent: dict[str, Any],
) -> None:
    """Runs the pipeline ``repeats`` times per process count, alternating, and prints the rows.

    Then the median speed-up over one process (each round's pair ran under the same load) and how
    many processes the parent alone could feed at one process's median speed.
    """
    rates: dict[int, list[float]] = {num_proc: [] for num_proc in counts}  # bytes/s
    for _ in range(repeats):
        for num_proc in counts:
            if num_proc > 1:
                capacity = measure_capacity(num_proc)
                print(
                    f"{'':<16} CPU capacity now: {num_proc} concurrent copies of one job run at "
                    f"{capacity:.2f}x one copy's speed (the ceiling of this speed-up)"
                )
            result = _in_fresh_process(measure_pipeline, source, tokenizer, num_proc)
            rates[num_proc].append(result["bytes"] / result["seconds"])
            tokens_per_byte = result["tokens"] / result["bytes"]
            single = rates[1][-1] * tokens_per_byte / 1e6 if 1 in rates else None
            print(_row(name, f"pipeline num_proc={num_proc}", result, single), flush=True)
    if 1 not in rates:
        return
    for num_proc in counts:
        if num_proc != 1:
            ratios = sorted(b / a for a, b in zip(rates[1], rates[num_proc], strict=True))
            listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
            print(
                f"{'':<16} num_proc={num_proc}: median speed-up {statistics.median(ratios):.2f}x "
                f"over num_proc=1 ({listed})"
            )
    feed = parent["bytes"] / parent["seconds"] / statistics.median(rates[1])
    print(f"{'':<16} parent feeds ~{feed:.0f} processes at one process's median speed")


def main(argv: list[str] | None = None) -> None:
    """Parses options, runs every measurement and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-mb", type=int, default=200, help="synthetic corpus size")
    parser.add_argument(
        "--num_proc",
        type=int,
        nargs="+",
        default=sorted({1, available_cpus()}),
        help="tokenizer process counts to measure (default: 1 and all CPUs)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=("shakespeare", "txt", "jsonl", "parquet"),
        default=["shakespeare", "txt", "parquet"],
        help="corpora to measure",
    )
    parser.add_argument("--tokenizer", default="gpt2", help="tokenizer of the pipeline")
    parser.add_argument(
        "--repeats", type=int, default=1, help="pipeline runs per --num_proc value, alternating"
    )
    parser.add_argument("--tmp", default=None, help="folder for the synthetic corpora")
    args = parser.parse_args(argv)
    print(f"CPUs: {available_cpus()}, piece size: {MAX_PIECE_CHARS} characters")
    header = (
        f"{'corpus':<16} {'measured':<24} {'MB':>8} {'Mtokens':>8} {'seconds':>8} {'MB/s':>7} "
        f"{'Mtok/s':>7} {'RSS base':>8} {'RSS peak':>8} {'RSS wrk':>8} {'speed-up':>7}  profile"
    )
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        corpora = []
        if "shakespeare" in args.cases:
            corpora.append(("shakespeare", "shakespeare"))
        if "txt" in args.cases:
            folder = Path(tmp) / "txt"
            folder.mkdir()
            corpora.append(
                (
                    f"{args.synthetic_mb}MB .txt",
                    str(write_synthetic_corpus(folder, args.synthetic_mb)),
                )
            )
        for kind, write in (("jsonl", write_synthetic_jsonl), ("parquet", write_synthetic_parquet)):
            if kind in args.cases:
                folder = Path(tmp) / kind
                folder.mkdir()
                write(folder, args.synthetic_mb)
                corpora.append((f"{args.synthetic_mb}MB .{kind}", str(folder)))
        print(header)
        for name, source in corpora:
            if args.tokenizer in TIKTOKEN_ENCODINGS:
                raw = _in_fresh_process(measure_tiktoken, source, args.tokenizer, 1)
                print(_row(name, "tiktoken 1 thread", raw, None), flush=True)
            parent = _in_fresh_process(measure_parent, source, args.tokenizer, 1)
            print(_row(name, "parent alone (serial)", parent, None), flush=True)
            _measure_scaling(name, source, args.tokenizer, args.num_proc, args.repeats, parent)


if __name__ == "__main__":
    main()
