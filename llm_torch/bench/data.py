"""Tokenization throughput and memory of ``prepare_data``'s pipeline, next to raw tiktoken.

Run ``python -m llm_torch.bench.data`` (``--help`` for options). It measures, for the built-in
corpus and for a synthetic corpus (default 200 MB, written to a temporary folder by repeating the
plays in shuffled orders, in 10 MB single-document files):

- the full pipeline (``cache.build_cache``: read, decode, cut, tokenize in threads, write), with
  GPT-2 and byte tokenizers;
- tiktoken's own ``encode_ordinary_batch`` on the same text, cut naively into pieces of the same
  size, timing only the encode calls (the text is already in memory, one document at a time):
  the speed to aim for.

Each measurement runs in a fresh process, so its peak resident memory (Linux's ``VmHWM``, else
``getrusage``'s ``ru_maxrss``) is its own; "RSS base" is that process's peak after imports (torch
and Lightning), before any work. Flat memory means the peak does not grow with the corpus size.
"""

import argparse
import random
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from llm_torch.data import shakespeare
from llm_torch.data.cache import available_cpus, build_cache, cache_folder
from llm_torch.data.sources import resolve_source
from llm_torch.data.splits import MAX_PIECE_CHARS, CorpusSplit
from llm_torch.tokenizer import get_tokenizer
from llm_torch.tokenizer.bpe import TIKTOKEN_ENCODINGS, load_encoding

FILE_BYTES = 10 * 2**20
"""Size of each synthetic file (one document each, so documents are far larger than a piece)."""


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


def measure_pipeline(source: str, tokenizer_name: str, threads: int) -> dict[str, Any]:
    """Prepares a cache in a temporary folder; returns size, tokens, seconds and memory."""
    base = _peak_rss_mb()
    tokenizer = get_tokenizer(tokenizer_name)
    split = CorpusSplit(resolve_source(source), None, 0.1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = cache_folder(Path(tmp), split, tokenizer.spec)  # hashes the source
        meta = build_cache(folder, split, tokenizer, threads=threads, progress=False)
        seconds = time.perf_counter() - start
    return {
        "bytes": meta["train_bytes"] + meta["val_bytes"],
        "tokens": meta["train_tokens"] + meta["val_tokens"],
        "seconds": seconds,
        "rss_base": base,
        "rss_peak": _peak_rss_mb(),
    }


def _raw_batches(source: str, batch_pieces: int) -> Iterator[list[str]]:
    """The corpus cut naively into pieces of ``MAX_PIECE_CHARS``, ``batch_pieces`` at a time."""
    batch: list[str] = []
    for chunks in resolve_source(source).documents():
        text = "".join(chunks)
        for start in range(0, len(text), MAX_PIECE_CHARS):
            batch.append(text[start : start + MAX_PIECE_CHARS])
            if len(batch) == batch_pieces:
                yield batch
                batch = []
    if batch:
        yield batch


def measure_tiktoken(source: str, tokenizer_name: str, threads: int) -> dict[str, Any]:
    """Times tiktoken's ``encode_ordinary_batch`` alone on the same text (no I/O, no writes)."""
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
    return {
        "bytes": size,
        "tokens": tokens,
        "seconds": seconds,
        "rss_base": base,
        "rss_peak": _peak_rss_mb(),
    }


def _in_fresh_process(
    function: Callable[[str, str, int], dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """Runs ``function(*args)`` in a new process so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _row(name: str, what: str, result: dict[str, Any], reference: float | None) -> str:
    """One table row: size, tokens, time, MB/s, tokens/s, memory and speed relative to tiktoken."""
    mb_per_s = result["bytes"] / result["seconds"] / 1e6
    tokens_per_s = result["tokens"] / result["seconds"] / 1e6
    ratio = f"{reference / mb_per_s:6.2f}x" if reference else "      -"
    return (
        f"{name:<14} {what:<22} {result['bytes'] / 1e6:8.1f} {result['tokens'] / 1e6:8.2f} "
        f"{result['seconds']:7.2f} {mb_per_s:7.2f} {tokens_per_s:7.2f} "
        f"{result['rss_base']:8.0f} {result['rss_peak']:8.0f} {ratio}"
    )


def main(argv: list[str] | None = None) -> None:
    """Parses options, runs every measurement and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-mb", type=int, default=200, help="synthetic corpus size")
    parser.add_argument("--threads", type=int, default=available_cpus(), help="tokenizer threads")
    args = parser.parse_args(argv)
    print(f"threads: {args.threads}, piece size: {MAX_PIECE_CHARS} characters")
    header = (
        f"{'corpus':<14} {'measured':<22} {'MB':>8} {'Mtokens':>8} {'seconds':>7} {'MB/s':>7} "
        f"{'Mtok/s':>7} {'RSS base':>8} {'RSS peak':>8} {'time vs tiktoken':>7}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = str(write_synthetic_corpus(Path(tmp), args.synthetic_mb))
        print(header)
        for name, source in (("shakespeare", "shakespeare"), (f"{args.synthetic_mb}MB", synthetic)):
            raw = _in_fresh_process(measure_tiktoken, source, "gpt2", args.threads)
            raw_speed = raw["bytes"] / raw["seconds"] / 1e6
            print(_row(name, "tiktoken batch (gpt2)", raw, None), flush=True)
            for tokenizer in ("gpt2", "byte"):
                result = _in_fresh_process(measure_pipeline, source, tokenizer, args.threads)
                reference = raw_speed if tokenizer == "gpt2" else None
                print(_row(name, f"pipeline ({tokenizer})", result, reference), flush=True)


if __name__ == "__main__":
    main()
