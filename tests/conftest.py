"""Test-wide setup: keep every test offline."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# GPT-2's BPE ranks live beside the checkout (../shared/tiktoken); point tiktoken there so no test
# downloads. CI exports the same variable; an explicit setting wins.
_SHARED_TIKTOKEN = Path(__file__).resolve().parents[1].parent / "shared" / "tiktoken"
if _SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
