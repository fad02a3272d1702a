"""Hugging Face ``tokenizers`` tokenizers from a local ``tokenizer.json`` (TinyLlama, Llama 2...).

The ``tokenizers`` package is optional (``transformers`` depends on it, so the ``dev`` extra has
it); it is imported when such a tokenizer is built, never at package import time.
"""

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llm_torch.tokenizer.base import EOT_TEXT, TokenizerUnavailableError, as_id_list
from llm_torch.tokenizer.files import read_checked, resolve_file
from llm_torch.tokenizer.tiktoken_file import EOT_CANDIDATES


def _import_tokenizers() -> Any:
    """Import ``tokenizers``, or say how to install it."""
    try:
        return importlib.import_module("tokenizers")
    except ImportError as err:
        raise TokenizerUnavailableError(
            "The 'hf' tokenizer reads tokenizer.json files with Hugging Face's `tokenizers` "
            "package, which is not installed. Fix: pip install tokenizers"
        ) from err


def _config_eos(path: str) -> str | None:
    """The ``eos_token`` of a ``tokenizer_config.json`` beside ``path``, if there is one."""
    config = Path(path).with_name("tokenizer_config.json")
    if not config.is_file():
        return None
    eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
    if isinstance(eos, dict):  # older files store an AddedToken as a dict
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` read from ``tokenizer.json``, behind llm-torch's protocol.

    Encoding is ordinary as for every llm-torch tokenizer: no BOS/EOS template is added, and
    special-token text in the input (``"</s>"``) is tokenized as text, not as the special id.

    Attributes:
        name: ``"hf"`` (spec string ``"hf:/path/tokenizer.json"``).
        path: Absolute path of ``tokenizer.json``.
        vocab_size: Highest id plus one, added tokens included.
        eot_id: Id of the document separator.
        cut_safe: False (see ``Tokenizer.cut_safe``).
    """

    name = "hf"
    cut_safe = False
    """Not proven for any ``tokenizer.json``: normalizers, prefix markers (SentencePiece's "▁"
    at the start of each encode call) and pre-tokenizers vary, so documents are encoded whole."""

    def __init__(
        self, path: str | os.PathLike[str], eot: str | int | None = None, sha256: str | None = None
    ) -> None:
        """Load the tokenizer.

        Args:
            path: ``tokenizer.json``, or a directory holding one (e.g. a ``save_pretrained`` dir).
            eot: The special token (text or id) that separates documents. ``None`` takes
                ``eos_token`` from a ``tokenizer_config.json`` beside the file, else the first of
                ``EOT_CANDIDATES`` that the tokenizer has.
            sha256: Expected file digest (from a saved spec); ``None`` accepts any content.

        Raises:
            TokenizerUnavailableError: The ``tokenizers`` package is not installed.
            FileNotFoundError: No such file.
            ValueError: Changed file, or no special token to use as ``eot``.
        """
        tokenizers = _import_tokenizers()
        self.path = resolve_file(path, "Hugging Face tokenizer.json", "tokenizer.json")
        data, self.sha256 = read_checked(self.path, sha256)
        self._tokenizer = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
        self._tokenizer.encode_special_tokens = True  # special-token text is plain text
        self.vocab_size: int = max(self._tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        self.eot_text = self._resolve_eot(eot)
        self.eot_id: int = self._tokenizer.token_to_id(self.eot_text)

    def _resolve_eot(self, eot: str | int | None) -> str:
        """Return the separator's text; it must be a special token so text cannot forge it."""
        special = {
            token_id: added.content
            for token_id, added in self._tokenizer.get_added_tokens_decoder().items()
            if added.special
        }
        by_text = {text: token_id for token_id, text in special.items()}
        if isinstance(eot, int) and eot in special:
            return special[eot]
        if isinstance(eot, str) and eot in by_text:
            return eot
        if eot is None:
            candidates = [_config_eos(self.path), *EOT_CANDIDATES]
            found = next((token for token in candidates if token in by_text), None)
            if found is not None:
                return found
        raise ValueError(
            f"Cannot use eot={eot!r} as the document separator of {self.path!r}: it must be one of "
            f"its special tokens {sorted(by_text)[:8]}. Name it in the spec, e.g. "
            "{'name': 'hf', 'path': ..., 'eot': '</s>'}."
        )

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable dict from which ``get_tokenizer`` rebuilds this tokenizer."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "eot": self.eot_text}

    def encode(self, text: str) -> list[int]:
        """Encode ``text`` without special tokens or BOS/EOS templates."""
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts with ``tokenizers``' parallel batch encoder."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def encode_to_numpy(self, text: str) -> npt.NDArray[np.uint32]:
        """Encode ``text`` into a 1-D uint32 array."""
        return np.asarray(self.encode(text), dtype=np.uint32)

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids, special tokens included; ``eot_id`` becomes ``EOT_TEXT``.

        Raises:
            ValueError: An id outside ``range(vocab_size)``.
        """
        id_list = as_id_list(ids, self.vocab_size)
        pieces, start = [], 0
        for i, token in enumerate([*id_list, self.eot_id]):
            if token == self.eot_id:
                piece = id_list[start:i]
                pieces.append(self._tokenizer.decode(piece, skip_special_tokens=False))
                start = i + 1
        return EOT_TEXT.join(pieces)

    def __reduce__(self) -> tuple[type["HFTokenizer"], tuple[str, str, str]]:
        """Pickle the spec only; workers re-read (and re-verify) the file."""
        return (HFTokenizer, (self.path, self.eot_text, self.sha256))

    def __repr__(self) -> str:
        return f"HFTokenizer(path={self.path!r}, vocab_size={self.vocab_size})"
