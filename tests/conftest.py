"""Test-wide setup: keep every test offline, and count the tests that lack a tokenizer file."""

import os
import re
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import tiktoken.load
import torch

# GPT-2's BPE ranks live beside the checkout (../shared/tiktoken); point tiktoken there so no test
# downloads. CI exports the same variable; an explicit setting wins (an empty folder included, which
# is how a fresh offline clone runs: the tests that need real files skip, the rest use a tiny BPE).
_SHARED_TIKTOKEN = Path(__file__).resolve().parents[1].parent / "shared" / "tiktoken"
if _SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Only now: it imports llm_torch, hence huggingface_hub, which reads HF_HUB_OFFLINE on import.
from bpe_helpers import NOT_CACHED, tiny_ranks, write_ranks  # noqa: E402

_read_file = tiktoken.load.read_file


def _read_local_file_only(blobpath: str) -> bytes:
    """Stands in for tiktoken's reader: local files are read, URLs are refused at once.

    tiktoken reads a cached file without calling this; it calls it to download a missing one. The
    refusal is an ``OSError``, which llm-torch reports as ``TokenizerUnavailableError`` and
    ``bpe_helpers.real_encoding`` turns into a skip, so no test waits on (or reaches) the network.
    """
    if "://" in blobpath:
        raise ConnectionError(f"the tests never download; refusing to fetch {blobpath}")
    return _read_file(blobpath)


tiktoken.load.read_file = _read_local_file_only

_MISSING = re.compile(rf"(\S+) {re.escape(NOT_CACHED)}")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Adds ``--require-encoding``: fail, rather than skip, when that tiktoken file is missing."""
    parser.addoption(
        "--require-encoding",
        action="append",
        default=[],
        metavar="NAME",
        help="tiktoken encoding (e.g. r50k_base) whose tests must run: a test that would skip "
        "because its file is not cached fails instead. Repeat for several.",
    )


def _missing_encoding(report: pytest.TestReport) -> str | None:
    """The encoding a skipped test lacked, or ``None`` for any other outcome or reason."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    match = _MISSING.search(str(report.longrepr[2]))
    return match.group(1) if match else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turns a missing-file skip into a failure when the encoding is required."""
    report = yield
    name = _missing_encoding(report)
    if name is not None and name in item.config.getoption("require_encoding"):
        report.outcome = "failed"
        report.longrepr = (
            f"--require-encoding {name}: its BPE file is not cached in TIKTOKEN_CACHE_DIR="
            f"{os.environ.get('TIKTOKEN_CACHE_DIR')!r}, and the tests never download"
        )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Prints how many tests skipped because a tokenizer file is not cached."""
    missing = Counter(
        name
        for report in terminalreporter.stats.get("skipped", [])
        if (name := _missing_encoding(report)) is not None
    )
    if missing:
        count = sum(missing.values())
        per_file = ", ".join(f"{name}: {n}" for name, n in sorted(missing.items()))
        terminalreporter.write_line(
            f"{count} test{'s' if count != 1 else ''} skipped: tokenizer files not cached in "
            f"TIKTOKEN_CACHE_DIR={os.environ.get('TIKTOKEN_CACHE_DIR')!r} ({per_file})"
        )


@pytest.fixture(scope="session")
def tiny_bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' small BPE (``bpe_helpers.tiny_ranks``) as a tiktoken ranks file.

    Name it as ``f"tiktoken:{tiny_bpe}"``: Llama 3's pattern and 256 special tokens after the
    ranks, ``<|end_of_text|>`` (the second) separating documents.
    """
    return write_ranks(tmp_path_factory.mktemp("tiny-bpe") / "tokenizer.model", tiny_ranks())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread.

    Tiny models gain nothing from more, and on a busy machine waiting for the thread pool costs
    far more than the work (30x slower on a loaded 2-CPU box).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
