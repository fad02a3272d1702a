"""``get_tokenizer``: one entry point that turns a name or a saved ``spec`` into a tokenizer."""

from collections.abc import Mapping
from typing import Any

from llm_torch.tokenizer.base import Tokenizer
from llm_torch.tokenizer.bpe import TIKTOKEN_ENCODINGS, TiktokenTokenizer
from llm_torch.tokenizer.byte import ByteTokenizer
from llm_torch.tokenizer.char import CharTokenizer
from llm_torch.tokenizer.hf_file import HFTokenizer
from llm_torch.tokenizer.tiktoken_file import TiktokenFileTokenizer

TOKENIZER_NAMES: tuple[str, ...] = (*TIKTOKEN_ENCODINGS, "byte", "char")

#: Tokenizers read from a local file, named ``"<kind>:<path>"`` or ``{"name": kind, "path": ...}``,
#: with the optional spec keys each accepts besides ``path``.
FILE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "tiktoken": ("sha256", "pat_str", "special_tokens", "eot"),
    "hf": ("sha256", "eot"),
}


def _file_tokenizer(name: str, fields: dict[str, Any], given: dict[str, Any]) -> Tokenizer:
    """Build a file-backed tokenizer from the spec fields left after ``name``."""
    if not isinstance(fields.get("path"), str) or not fields["path"]:
        raise ValueError(
            f"Tokenizer spec {given!r} needs a 'path', e.g. '{name}:/path/to/"
            f"{'tokenizer.model' if name == 'tiktoken' else 'tokenizer.json'}'."
        )
    unexpected = sorted(set(fields) - {"path", *FILE_TOKENIZERS[name]})
    if unexpected:
        raise ValueError(
            f"Unexpected keys {unexpected} in tokenizer spec {given!r}; {name!r} takes 'path' "
            f"and optionally {list(FILE_TOKENIZERS[name])}."
        )
    if name == "tiktoken":
        return TiktokenFileTokenizer(**fields)
    return HFTokenizer(**fields)


def get_tokenizer(spec: str | Mapping[str, Any]) -> Tokenizer:
    """Builds a tokenizer from a name (``"gpt2"``, ``"byte"``...) or from a tokenizer's ``spec``.

    Args:
        spec: One of ``TOKENIZER_NAMES``; a file spec ``"tiktoken:/path/tokenizer.model"`` (a
            tiktoken ranks file; pattern and special tokens from its ``.json`` sidecar when
            ``llm-torch train-tokenizer`` wrote one, else Llama 3's) or
            ``"hf:/path/tokenizer.json"`` (Hugging Face ``tokenizers``); or a dict such as
            ``{"name": "char", "chars": "ab"}`` or ``{"name": "tiktoken", "path": ..., "eot": ...}``
            as returned by ``Tokenizer.spec`` (and stored in checkpoints and data caches).

    Raises:
        ValueError: Unknown name, malformed spec, or ``"char"`` without its ``chars``.
        FileNotFoundError: A file spec names a missing file.
        TokenizerUnavailableError: A tiktoken file is not cached and cannot be downloaded, or
            ``tokenizers`` is missing for an ``"hf"`` spec.
    """
    if isinstance(spec, str):
        kind, colon, path = spec.partition(":")
        fields: dict[str, Any] = (
            {"name": kind, "path": path} if colon and kind in FILE_TOKENIZERS else {"name": spec}
        )
    else:
        fields = dict(spec)
    given = dict(fields)
    if "name" not in fields:
        raise ValueError(f"Tokenizer spec {given!r} has no 'name'.")
    name = fields.pop("name")
    if name in FILE_TOKENIZERS:
        return _file_tokenizer(name, fields, given)
    if name not in TOKENIZER_NAMES:
        raise ValueError(
            f"Unknown tokenizer {name!r}; valid names are: {', '.join(TOKENIZER_NAMES)}; or a "
            "file: 'tiktoken:/path/tokenizer.model' or 'hf:/path/tokenizer.json'."
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
