"""tiktoken BPE tokenizers: GPT-2 (``r50k_base``), ``cl100k_base`` and ``o200k_base``.

tiktoken downloads each BPE ranks file once and caches it in ``TIKTOKEN_CACHE_DIR``. Offline,
a missing file becomes one clear ``TokenizerUnavailableError`` instead of a network traceback.
"""

import os
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import tiktoken

from llm_torch.tokenizer.base import TokenizerUnavailableError, as_id_list

# Our name -> tiktoken encoding. "gpt2" is built from r50k_base (identical ranks, pattern and
# special tokens) because tiktoken's own "gpt2" fetches different files (encoder.json, vocab.bpe).
TIKTOKEN_ENCODINGS: dict[str, str] = {
    "gpt2": "r50k_base",
    "r50k_base": "r50k_base",
    "cl100k_base": "cl100k_base",
    "o200k_base": "o200k_base",
}

_ENCODINGS: dict[str, tiktoken.Encoding] = {}  # one Encoding per process, shared by all names
_LOCK = threading.Lock()


def _cache_dir_description() -> str:
    """Says where tiktoken looks for cached files, for error messages."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache_dir is not None:
        return f"TIKTOKEN_CACHE_DIR={cache_dir!r}"
    default = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return f"TIKTOKEN_CACHE_DIR is unset, so tiktoken's default cache {default!r}"


def load_encoding(encoding_name: str) -> tiktoken.Encoding:
    """Returns the process-wide tiktoken ``Encoding``, loading (or downloading) it once.

    Args:
        encoding_name: A tiktoken encoding name, e.g. ``"r50k_base"``.

    Raises:
        TokenizerUnavailableError: The ranks file is not cached and cannot be downloaded.
    """
    with _LOCK:
        encoding = _ENCODINGS.get(encoding_name)
        if encoding is None:
            try:
                encoding = tiktoken.get_encoding(encoding_name)
            except OSError as err:  # requests' and urllib's network errors are OSErrors too
                raise TokenizerUnavailableError(
                    f"Cannot load the tiktoken encoding {encoding_name!r}: its BPE ranks file is "
                    f"not in the cache ({_cache_dir_description()}) and downloading it failed "
                    f"({type(err).__name__}: {err}). Fix: run once with internet access so "
                    "tiktoken downloads and caches it, or copy a tiktoken cache file for "
                    f"{encoding_name!r} into a folder and set the TIKTOKEN_CACHE_DIR environment "
                    "variable to that folder."
                ) from None  # the message names the cause; the network traceback adds noise
            _ENCODINGS[encoding_name] = encoding
        return encoding


class TiktokenTokenizer:
    """A tiktoken BPE tokenizer (GPT-2, cl100k_base, o200k_base).

    Attributes:
        name: Our registry name (``"gpt2"``, ``"r50k_base"``, ``"cl100k_base"``, ``"o200k_base"``).
        vocab_size: ``Encoding.n_vocab`` (50257 for GPT-2), special tokens included.
        eot_id: The ``<|endoftext|>`` id (50256 for GPT-2).
        cut_safe: True: the safe boundaries are proven for these encodings' patterns (see
            ``Tokenizer.cut_safe``; ``tests/test_corpus_boundaries.py`` checks tiktoken's).
        num_threads: Threads for ``encode_batch``; not part of ``spec`` (it does not change ids).
    """

    cut_safe = True

    def __init__(self, name: str = "gpt2", num_threads: int = 8) -> None:
        """Loads the encoding now, so a missing file fails here rather than mid-training.

        Args:
            name: One of ``TIKTOKEN_ENCODINGS``.
            num_threads: Threads tiktoken uses in ``encode_batch``.

        Raises:
            ValueError: Unknown name.
            TokenizerUnavailableError: The ranks file is not cached and cannot be downloaded.
        """
        if name not in TIKTOKEN_ENCODINGS:
            raise ValueError(
                f"Unknown tiktoken tokenizer {name!r}; expected one of {list(TIKTOKEN_ENCODINGS)}."
            )
        self.name = name
        self.num_threads = num_threads
        self._encoding = load_encoding(TIKTOKEN_ENCODINGS[name])
        self.vocab_size: int = self._encoding.n_vocab
        self.eot_id: int = self._encoding.eot_token

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable dict from which ``get_tokenizer`` rebuilds this tokenizer."""
        return {"name": self.name}

    def encode(self, text: str) -> list[int]:
        """Encodes ``text``; ``"<|endoftext|>"`` in it is plain text, not ``eot_id``."""
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many texts in parallel with tiktoken's thread pool."""
        return self._encoding.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def encode_to_numpy(self, text: str) -> npt.NDArray[np.uint32]:
        """Encodes ``text`` straight into a 1-D uint32 array, skipping the Python list.

        The array may be read-only (it wraps tiktoken's buffer); the caller picks a smaller dtype.
        """
        # Nothing allowed and nothing disallowed: special-token text is encoded as plain text.
        return self._encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes ids; invalid UTF-8 (e.g. a cut multi-byte character) becomes U+FFFD."""
        return self._encoding.decode(as_id_list(ids))

    def __reduce__(self) -> tuple[type["TiktokenTokenizer"], tuple[str, int]]:
        """Pickles by name only; workers reload the (cached) encoding instead of copying ranks."""
        return (TiktokenTokenizer, (self.name, self.num_threads))

    def __repr__(self) -> str:
        return f"TiktokenTokenizer(name={self.name!r}, vocab_size={self.vocab_size})"
