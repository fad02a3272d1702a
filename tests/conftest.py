"""Test-wide setup: keep every test offline."""

import os
from pathlib import Path

# GPT-2's BPE ranks live beside the checkout (../shared/tiktoken); point tiktoken there so no test
# downloads. CI exports the same variable; an explicit setting wins.
_SHARED_TIKTOKEN = Path(__file__).resolve().parents[1].parent / "shared" / "tiktoken"
if _SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
