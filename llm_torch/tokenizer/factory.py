"""``get_tokenizer``: one entry point that turns a name or a saved ``spec`` into a tokenizer."""

from collections.abc import Mapping
from typing import Any

from llm_torch.tokenizer.base import Tokenizer
from llm_torch.tokenizer.bpe import TIKTOKEN_ENCODINGS, TiktokenTokenizer
from llm_torch.tokenizer.byte import ByteTokenizer
from llm_torch.tokenizer.char import CharTokenizer

TOKENIZER_NAMES: tuple[str, ...] = (*TIKTOKEN_ENCODINGS, "byte", "char")


def get_tokenizer(spec: str | Mapping[str, Any]) -> Tokenizer:
    """Builds a tokenizer from a name (``"gpt2"``, ``"byte"``...) or from a tokenizer's ``spec``.

    Args:
        spec: One of ``TOKENIZER_NAMES``, or a dict such as ``{"name": "char", "chars": "ab"}``
            as returned by ``Tokenizer.spec`` (and stored in checkpoints and data caches).

    Raises:
        ValueError: Unknown name, malformed spec, or ``"char"`` without its ``chars``.
        TokenizerUnavailableError: A tiktoken file is not cached and cannot be downloaded.
    """
    fields: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec)
    given = dict(fields)
    if "name" not in fields:
        raise ValueError(f"Tokenizer spec {given!r} has no 'name'.")
    name = fields.pop("name")
    if name not in TOKENIZER_NAMES:
        raise ValueError(
            f"Unknown tokenizer {name!r}; valid names are: {', '.join(TOKENIZER_NAMES)}."
        )
    chars = fields.pop("chars", None)
    if fields:
        raise ValueError(f"Unexpected keys {sorted(fields)} in tokenizer spec {given!r}.")
    if name == "char":
        if not isinstance(chars, str):
            raise ValueError(
                "The 'char' tokenizer has no fixed vocabulary: it is learned from the training "
                "corpus (TextDataModule does that) or built with CharTokenizer.from_texts(...). "
                "To rebuild a saved one, pass its spec {'name': 'char', 'chars': ...}."
            )
        return CharTokenizer(chars)
    if chars is not None:
        raise ValueError(f"Tokenizer {name!r} takes no 'chars'; only 'char' does.")
    if name == "byte":
        return ByteTokenizer()
    return TiktokenTokenizer(name)
