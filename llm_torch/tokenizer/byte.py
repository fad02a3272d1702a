"""Byte-level tokenizer: UTF-8 bytes are the tokens, so it needs no file and loses nothing."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from llm_torch.tokenizer.base import EOT_TEXT, as_id_list


class ByteTokenizer:
    """Ids 0..255 are UTF-8 byte values and 256 is end-of-text (``vocab_size`` 257).

    Lossless on any text Python can encode as UTF-8; a good baseline that needs no download.
    """

    name = "byte"
    vocab_size = 257
    eot_id = 256
    cut_safe = True  # each character's bytes do not depend on its neighbours

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable dict from which ``get_tokenizer`` rebuilds this tokenizer."""
        return {"name": self.name}

    def encode(self, text: str) -> list[int]:
        """Returns the UTF-8 bytes of ``text`` as ids."""
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes each text; bytes are so cheap that threads would not help."""
        return [list(text.encode("utf-8")) for text in texts]

    def encode_to_numpy(self, text: str) -> npt.NDArray[np.uint32]:
        """Encodes ``text`` into a 1-D uint32 array (uint32 in all tokenizers, for uniformity)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes ids; ``eot_id`` becomes ``EOT_TEXT`` and invalid UTF-8 becomes U+FFFD.

        Raises:
            ValueError: An id outside ``range(vocab_size)``.
        """
        ids = as_id_list(ids, self.vocab_size)
        if self.eot_id not in ids:
            return bytes(ids).decode("utf-8", errors="replace")
        # Decode each document separately so EOT never splits a multi-byte character.
        pieces, start = [], 0
        for i, token in enumerate([*ids, self.eot_id]):
            if token == self.eot_id:
                pieces.append(bytes(ids[start:i]).decode("utf-8", errors="replace"))
                start = i + 1
        return EOT_TEXT.join(pieces)

    def __repr__(self) -> str:
        return "ByteTokenizer()"
