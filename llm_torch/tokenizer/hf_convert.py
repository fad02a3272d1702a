"""tiktoken ranks to a Hugging Face ``tokenizer.json``, so exported models carry their tokenizer.

tiktoken stores only ranks: bytes -> rank, a lower rank merging first. Hugging Face's BPE needs
the merges as pairs. The pair for a token is what tiktoken's own algorithm makes of the token's
bytes using only lower ranks (the same derivation as ``transformers``' ``TikTokenConverter``).
With ``ignore_merges`` (a whole pre-token that is in the vocabulary is one token, as in tiktoken)
and the byte-to-unicode alphabet of GPT-2, both libraries then split text identically.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_torch.tokenizer.hf_file import _import_tokenizers
from llm_torch.tokenizer.tiktoken_file import TiktokenFileTokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, used by byte-level BPE vocabularies.

    Printable Latin-1 bytes map to themselves; the others to ``chr(256 + n)`` in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def _split(ranks: Mapping[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Split ``token`` as tiktoken's BPE would, using only ranks below ``max_rank``."""
    parts = [bytes([byte]) for byte in token]
    while len(parts) > 1:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge pairs, in rank order, that rebuild every multi-byte token from lower ranks.

    A token whose bytes do not come out as exactly two lower-ranked parts has no merge (tiktoken
    can then only produce it as a whole pre-token, which ``ignore_merges`` covers).
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _split(ranks, token, rank)
            if len(parts) == 2:
                merges.append((parts[0], parts[1]))
    return merges


def tokenizer_json(
    ranks: Mapping[bytes, int], pattern: str, special_tokens: Mapping[str, int]
) -> str:
    """A Hugging Face ``tokenizer.json`` that encodes like tiktoken with these ranks.

    Raises:
        TokenizerUnavailableError: The ``tokenizers`` package is not installed.
        ValueError: Special-token ids do not directly follow the ranks (``tokenizers`` numbers
            added tokens after the vocabulary).
    """
    tokenizers: Any = _import_tokenizers()
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers

    alphabet = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [(text(left), text(right)) for left, right in merges_from_ranks(ranks)]
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    ordered = sorted(special_tokens.items(), key=lambda item: item[1])
    expected = list(range(len(vocab), len(vocab) + len(ordered)))
    if [token_id for _, token_id in ordered] != expected:
        raise ValueError(
            f"Cannot write a tokenizer.json: the special tokens' ids {ordered[:4]}... do not "
            f"directly follow the {len(vocab)} ranks, and tokenizers numbers them that way."
        )
    tokenizer.add_special_tokens([AddedToken(token, special=True) for token, _ in ordered])
    result: str = tokenizer.to_str()
    return result


def write_tokenizer_json(tokenizer: TiktokenFileTokenizer, folder: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.json`` and a ``tokenizer_config.json`` naming the end-of-text token.

    ``transformers.AutoTokenizer`` and llm-torch's ``hf:`` tokenizer then load the folder with
    the same ids as ``tokenizer``; the config tells both which token ends a document.

    Raises:
        TokenizerUnavailableError: The ``tokenizers`` package is not installed.
        ValueError: See ``tokenizer_json``.
    """
    out = Path(folder)
    data = tokenizer_json(tokenizer.mergeable_ranks, tokenizer.pattern, tokenizer.special_token_ids)
    (out / "tokenizer.json").write_text(data, encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": tokenizer.eot_text,
        "bos_token": tokenizer.eot_text,
        "model_max_length": 1_000_000_000,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
