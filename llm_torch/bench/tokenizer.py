"""Tokenizer training time and peak memory (``llm-torch train-tokenizer``), and bytes per token.

Run ``python -m llm_torch.bench.tokenizer`` (``--help`` for options). Two presets:

- ``builtin``: a 4,096-token BPE on the built-in corpus (38 plays, 5 MB).
- ``100mb``: a 32,768-token BPE on about 100 MB written to a temporary folder (deleted after):
  ``--corpus mixed`` (default) is the plays followed by this Python's standard-library sources
  (English and code, many distinct words, as real corpora have); ``--corpus plays`` repeats the
  plays in shuffled orders (the same words over and over: the counting cost alone).

Each training runs in a fresh process, so its peak resident memory (Linux's ``VmHWM``) is its
own; "RSS base" is that process's peak after imports, before any work. Afterwards every trained
tokenizer is measured in bytes per token next to GPT-2's (and ``cl100k_base``'s, ``o200k_base``'s
when cached) on tinyshakespeare when ``../shared/data`` has it (it shares passages with the
built-in plays, so it flatters tokenizers trained on them) and, for ``mixed``, on 5 MB of
standard-library sources beyond those trained on (truly held out).
"""

import argparse
import random
import resource
import sysconfig
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from llm_torch.corpus import shakespeare
from llm_torch.tokenizer.compare import (
    REFERENCE_TOKENIZERS,
    count_tokens,
    format_table,
    load_references,
)
from llm_torch.tokenizer.tiktoken_file import TiktokenFileTokenizer

PART_BYTES = 10 * 10**6
"""Size of each file of a written corpus."""

TINYSHAKESPEARE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"
)
"""Held-out English text, when the checkout has the shared data folder beside it."""


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``VmHWM``, else ``ru_maxrss``)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stdlib_texts() -> list[str]:
    """This Python's standard-library sources that are valid UTF-8, in path order."""
    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    return texts


def _write_parts(folder: Path, texts: list[str], megabytes: float, prefix: str) -> int:
    """Write ``texts`` into ~``PART_BYTES`` files, up to ``megabytes``; return how many it used."""
    folder.mkdir(parents=True, exist_ok=True)
    part: list[str] = []
    size = written = index = used = 0
    for text in texts:
        if written + size >= megabytes * 1e6:
            break
        part.append(text)
        size += len(text.encode("utf-8"))
        used += 1
        if size >= PART_BYTES:
            (folder / f"{prefix}-{index:04d}.txt").write_text("".join(part), encoding="utf-8")
            written, part, size, index = written + size, [], 0, index + 1
    if part:
        (folder / f"{prefix}-{index:04d}.txt").write_text("".join(part), encoding="utf-8")
    return used


def write_corpus(folder: Path, megabytes: float, kind: str) -> Path | None:
    """Write a ~``megabytes`` training corpus to ``folder/train``; return held-out code, if any.

    ``mixed``: the plays, then standard-library sources; the next 5 MB of sources are written to
    ``folder/heldout-code`` as held-out text. ``plays``: the plays repeated in shuffled orders.
    """
    plays = [shakespeare.read_play(path) for path in shakespeare.play_paths()]
    if kind == "plays":
        rng = random.Random(0)
        needed = int(megabytes * 1e6 / sum(len(play) for play in plays)) + 1
        texts = [play for _ in range(needed) for play in rng.sample(plays, len(plays))]
        _write_parts(folder / "train", texts, megabytes, "plays")
        return None
    code = _stdlib_texts()
    used = _write_parts(folder / "train", plays + code, megabytes, "mixed") - len(plays)
    _write_parts(folder / "heldout-code", code[used:], 5, "code")
    return folder / "heldout-code"


def train_in_process(source: str, vocab_size: int, out: str) -> dict[str, Any]:
    """Train a tokenizer; return seconds, text size and memory (run in a fresh process)."""
    from llm_torch.tokenizer.train import train_tokenizer

    base = _peak_rss_mb()
    result = train_tokenizer(source, vocab_size, out, overwrite=True, log=lambda _: None)
    return {
        "seconds": result.seconds,
        "bytes": result.stats.bytes,
        "rss_base": base,
        "rss_peak": _peak_rss_mb(),
    }


def _train(source: str, vocab_size: int, out: Path) -> dict[str, Any]:
    """``train_in_process`` in a new spawned process, so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(train_in_process, source, vocab_size, str(out)).result()


def _report(name: str, vocab_size: int, result: dict[str, Any]) -> None:
    print(
        f"{name:<24} {vocab_size:>7,} {result['bytes'] / 1e6:8.1f} {result['seconds']:8.1f} "
        f"{result['bytes'] / 1e6 / result['seconds']:7.1f} {result['rss_base']:9.0f} "
        f"{result['rss_peak']:9.0f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse options, train with each preset, print timings and bytes-per-token tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["builtin", "100mb", "all"], default="all")
    parser.add_argument("--corpus", choices=["mixed", "plays"], default="mixed")
    parser.add_argument("--mb", type=float, default=100, help="size of the written corpus")
    parser.add_argument("--vocab_size", type=int, default=32768, help="for the 100mb preset")
    parser.add_argument("--compare", nargs="*", default=list(REFERENCE_TOKENIZERS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llm-torch-bench-tokenizer-") as tmp:
        folder = Path(tmp)
        runs: list[tuple[str, str, int]] = []
        heldout: list[str] = [str(TINYSHAKESPEARE)] if TINYSHAKESPEARE.is_file() else []
        if args.preset in ("builtin", "all"):
            runs.append(("builtin (5 MB)", "shakespeare", 4096))
        if args.preset in ("100mb", "all"):
            start = time.perf_counter()
            code = write_corpus(folder / "corpus", args.mb, args.corpus)
            print(f"wrote the {args.corpus} corpus in {time.perf_counter() - start:.0f} s")
            runs.append((f"{args.corpus} ({args.mb:g} MB)", str(folder / "corpus" / "train"), 0))
            heldout += [str(code)] if code is not None else []
        print(
            f"{'corpus':<24} {'vocab':>7} {'MB':>8} {'seconds':>8} {'MB/s':>7} "
            f"{'RSS base':>9} {'RSS peak':>9}  (MiB)"
        )
        trained: dict[str, TiktokenFileTokenizer] = {}
        for name, source, vocab_size in runs:
            vocab_size = vocab_size or args.vocab_size
            out = folder / f"tokenizer-{len(trained)}"
            _report(name, vocab_size, _train(source, vocab_size, out))
            trained[f"{name}, {vocab_size}"] = TiktokenFileTokenizer(out / "tokenizer.model")
        references = load_references(args.compare)
        for source in heldout:
            print(f"\nBytes per token on held-out {source}:")
            print(format_table(count_tokens(source, {**trained, **references})))


if __name__ == "__main__":
    main()
