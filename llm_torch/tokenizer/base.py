"""The tokenizer contract shared by every tokenizer in llm-torch.

Models, data caches and checkpoints only ever see this small protocol, so any tokenizer (tiktoken
BPE, raw bytes, learned characters) can be swapped in by name. A tokenizer's ``spec`` is a
JSON-serialisable dict that ``get_tokenizer`` turns back into an identical tokenizer; checkpoints
and data caches store it instead of pickling the tokenizer.
"""

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

EOT_TEXT = "<|endoftext|>"
"""What ``decode`` prints for the end-of-text id, in every tokenizer (as tiktoken does)."""


class TokenizerUnavailableError(RuntimeError):
    """A tokenizer's data (e.g. a BPE ranks file) cannot be loaded, typically when offline."""


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids.

    Encoding is always "ordinary": text that contains ``"<|endoftext|>"`` is encoded as plain
    text, never as ``eot_id``. The data pipeline inserts ``eot_id`` between documents itself, so
    untrusted text can never forge a document boundary.
    """

    @property
    def name(self) -> str:
        """Registry name, e.g. ``"gpt2"``, ``"byte"`` or ``"char"``."""
        ...

    @property
    def vocab_size(self) -> int:
        """Number of ids, EOT included: every id is in ``range(vocab_size)``."""
        ...

    @property
    def eot_id(self) -> int:
        """The end-of-text id that separates documents."""
        ...

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable dict from which ``get_tokenizer`` rebuilds this tokenizer."""
        ...

    @property
    def cut_safe(self) -> bool:
        """Whether text cut at safe boundaries encodes, piece by piece, to the whole text's ids.

        The data pipeline cuts long documents at the safe boundaries of
        ``llm_torch.corpus.boundaries`` only for such tokenizers. True only where that is proven
        for the tokenizer's own rule: byte and char tokenizers (each character encodes alone) and
        tiktoken BPE under one of ``tiktoken_file.CUT_SAFE_PATTERNS``. False otherwise, e.g. for
        a SentencePiece-style ``tokenizer.json``, which adds a "▁" at the start of every encode
        call: then every document is encoded whole.
        """
        ...

    def encode(self, text: str) -> list[int]:
        """Encodes ``text`` (ordinary encoding: no special tokens) into token ids."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encodes many texts; equal to ``[encode(t) for t in texts]`` but may be faster."""
        ...

    def encode_to_numpy(self, text: str) -> npt.NDArray[np.uint32]:
        """Encodes ``text`` like ``encode``, into a 1-D uint32 array (no Python list)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Decodes token ids back to text; ``eot_id`` becomes ``EOT_TEXT``."""
        ...


def as_id_list(ids: Sequence[int], vocab_size: int | None = None) -> list[int]:
    """Returns ``ids`` as a list of Python ints, optionally checked against ``range(vocab_size)``.

    Accepts lists, tuples, numpy arrays and torch tensors alike. ``tolist()`` matters: ``bytes()``
    of a numpy array would read its raw memory instead of its values.

    Raises:
        ValueError: ``vocab_size`` is given and an id lies outside ``range(vocab_size)``.
    """
    tolist = getattr(ids, "tolist", None)
    id_list = list(tolist()) if tolist is not None else list(ids)
    if vocab_size is not None and id_list and not 0 <= min(id_list) <= max(id_list) < vocab_size:
        bad = next(i for i in id_list if not 0 <= i < vocab_size)
        raise ValueError(f"Token id {bad} is outside this tokenizer's range({vocab_size}).")
    return id_list
