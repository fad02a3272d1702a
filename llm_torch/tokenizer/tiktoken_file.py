"""tiktoken BPE from a local ranks file, such as Llama 3's ``tokenizer.model``.

A ranks file holds one ``base64(token bytes) rank`` pair per line. It carries neither the
pre-tokenizer pattern nor the special tokens. They come, in this order, from the spec, from a
sidecar JSON beside the file (``tokenizer.model.json``, written by ``llm-torch train-tokenizer``),
or from Llama 3's defaults (special tokens get the ids after the ranks, as Meta assigns them).

The file is parsed here rather than by ``tiktoken.load.load_tiktoken_bpe``, which caches local
files in ``TIKTOKEN_CACHE_DIR`` keyed by path, so an edited file would load stale ranks.
"""

import base64
import binascii
import json
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import tiktoken

from llm_torch.tokenizer.base import EOT_TEXT, as_id_list
from llm_torch.tokenizer.files import read_checked, resolve_file

#: Llama 3's pre-tokenizer regex (Meta's ``tokenizer.py``; the same splits as ``cl100k_base``).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: GPT-4's pre-tokenizer (``cl100k_base``, as rustbpe and nanochat use it): contractions, letters
#: with one leading non-letter, digits in groups of at most three, punctuation runs, newlines and
#: spaces. Possessive quantifiers (``?+``, ``++``) keep it linear-time in fancy-regex. The default
#: of ``llm-torch train-tokenizer``.
GPT4_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
    r"|\s*[\r\n]|\s+(?!\S)|\s+"
)

#: tiktoken's own patterns, as ``tiktoken_ext.openai_public`` defines them (tiktoken 0.14).
R50K_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"
CL100K_PATTERN = (
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"
    r"|\s++$|\s*[\r\n]|\s+(?!\S)|\s"
)
O200K_PATTERN = "|".join(
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    )
)

CUT_SAFE_PATTERNS: frozenset[str] = frozenset(
    (R50K_PATTERN, CL100K_PATTERN, O200K_PATTERN, GPT4_PATTERN, LLAMA3_PATTERN)
)
"""Pre-tokenizer regexes for which ``llm_torch.corpus.boundaries`` proves its safe boundaries
(``tests/test_corpus_boundaries.py`` checks each): a tiktoken file under one of them is
``cut_safe``. Compared as exact strings, so an edited pattern is never assumed safe."""

_LLAMA3_NAMED_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
#: Llama 3.1 / 3.2's 256 special tokens in id order after the 128000 ranks, as their Hugging Face
#: tokenizer.json numbers them (128001 ``<|end_of_text|>`` ... 128255
#: ``<|reserved_special_token_247|>``).
LLAMA3_SPECIAL_TOKENS: tuple[str, ...] = (
    *_LLAMA3_NAMED_SPECIALS,
    *(f"<|reserved_special_token_{3 + i}|>" for i in range(256 - len(_LLAMA3_NAMED_SPECIALS))),
)

#: Special tokens tried, in order, as the document separator when the spec names none.
EOT_CANDIDATES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>")

SIDECAR_SUFFIX = ".json"
"""The sidecar of ``tokenizer.model`` is ``tokenizer.model.json``: named after its ranks file (a
folder may hold several), and never ``tokenizer.json``, which is Hugging Face's format."""

SIDECAR_FORMAT = "llm-torch tiktoken sidecar"
"""Value of the sidecar's ``"format"`` key, so a stray JSON file is not mistaken for one."""


def sidecar_path(ranks_path: str | os.PathLike[str]) -> Path:
    """The sidecar JSON that belongs to a ranks file (it may not exist)."""
    path = Path(ranks_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(ranks_path: str, ranks_sha256: str) -> dict[str, Any] | None:
    """Read and check the sidecar of ``ranks_path``; ``None`` when there is none.

    The sidecar records the SHA-256 of the ranks file it was written with: a ranks file replaced
    without its sidecar would otherwise be paired with another tokenizer's special-token ids.

    Returns:
        ``{"pat_str": str, "special_tokens": {name: id}, "eot": str}``.

    Raises:
        ValueError: The sidecar is not valid JSON, lacks a key, has a wrong type, or belongs to
            other ranks.
    """
    path = sidecar_path(ranks_path)
    if not path.is_file():
        return None
    fix = f"Delete {str(path)!r} or write it again with `llm-torch train-tokenizer`."
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"Tokenizer sidecar {str(path)!r} is not valid JSON ({err}). {fix}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ValueError(
            f'{str(path)!r} is not an llm-torch tokenizer sidecar (no "format": '
            f"{SIDECAR_FORMAT!r}). {fix}"
        )
    specials = data.get("special_tokens")
    valid = (
        isinstance(data.get("pat_str"), str)
        and isinstance(data.get("eot"), str)
        and isinstance(specials, dict)
        and all(isinstance(k, str) and type(v) is int for k, v in specials.items())
    )
    if not valid:
        raise ValueError(
            f"Tokenizer sidecar {str(path)!r} needs 'pat_str' (a string), 'special_tokens' "
            f"({{name: id}}) and 'eot' (a string). {fix}"
        )
    if data.get("ranks_sha256") != ranks_sha256:
        raise ValueError(
            f"Tokenizer sidecar {str(path)!r} was written for other ranks (sha256 "
            f"{data.get('ranks_sha256')}) than {ranks_path!r} (sha256 {ranks_sha256}): its "
            f"special-token ids would not fit. {fix}"
        )
    return {"pat_str": data["pat_str"], "special_tokens": specials, "eot": data["eot"]}


def parse_ranks(data: bytes, path: str) -> dict[bytes, int]:
    """Parse a tiktoken ranks file's bytes.

    Raises:
        ValueError: A malformed line (named by number), or single bytes missing from the ranks
            (byte-level BPE needs all 256 so that any text can be encoded).
    """
    ranks: dict[bytes, int] = {}
    seen: set[int] = set()
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            value = int(rank)
            token_bytes = base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error):
            raise ValueError(
                f"{path!r} line {number} is not 'base64-token rank': {line[:80]!r}. Is this a "
                "tiktoken BPE ranks file (e.g. Llama 3's tokenizer.model)?"
            ) from None
        if token_bytes in ranks or value in seen or value < 0:
            # tiktoken would silently keep one of two lines (a token with two ids, or an id
            # decoding to two tokens), so a damaged file must fail here.
            raise ValueError(
                f"{path!r} line {number}: token {token_bytes!r} or rank {value} is repeated or "
                "negative; a tiktoken ranks file gives each token one unique rank. Is the file "
                "damaged?"
            )
        ranks[token_bytes] = value
        seen.add(value)
    missing = [byte for byte in range(256) if bytes([byte]) not in ranks]
    if missing:
        raise ValueError(
            f"{path!r} lacks single-byte tokens (e.g. byte {missing[0]}): tiktoken needs all 256 "
            "to encode arbitrary text."
        )
    return ranks


class TiktokenFileTokenizer:
    """A tiktoken BPE tokenizer loaded from a local ranks file (Llama 3's ``tokenizer.model``).

    Attributes:
        name: ``"tiktoken"`` (spec string ``"tiktoken:/path/tokenizer.model"``).
        path: Absolute path of the ranks file.
        vocab_size: Ranks plus special tokens (128256 for Llama 3).
        eot_id: Id of the document separator (``<|end_of_text|>``, 128001, for Llama 3).
        eot_text: The separator's text.
        pattern: The pre-tokenizer regex in use.
        cut_safe: Whether ``pattern`` is one of ``CUT_SAFE_PATTERNS`` (see
            ``Tokenizer.cut_safe``).
        special_token_ids: ``{token: id}`` of every special token.
        num_threads: Threads for ``encode_batch``; not part of ``spec``.
    """

    name = "tiktoken"

    def __init__(
        self,
        path: str | os.PathLike[str],
        pat_str: str | None = None,
        special_tokens: Sequence[str] | Mapping[str, int] | None = None,
        eot: str | int | None = None,
        sha256: str | None = None,
        num_threads: int = 8,
    ) -> None:
        """Load the ranks file now, so a bad file fails here rather than mid-training.

        Args:
            path: The ranks file, or a folder holding ``tokenizer.model``.
            pat_str: Pre-tokenizer regex; ``None`` means the sidecar's, else ``LLAMA3_PATTERN``.
            special_tokens: Names (ids follow the highest rank, in order) or ``{name: id}``;
                ``None`` means the sidecar's, else ``LLAMA3_SPECIAL_TOKENS``.
            eot: The special token (name or id) that separates documents; ``None`` means the
                sidecar's, else the first of ``EOT_CANDIDATES`` present.
            sha256: Expected file digest (from a saved spec); ``None`` accepts any content.
            num_threads: Threads tiktoken uses in ``encode_batch``.

        Raises:
            FileNotFoundError: No such file.
            ValueError: Malformed file or sidecar, changed file, clashing ids or an unknown
                ``eot``.
        """
        if isinstance(special_tokens, str):
            raise ValueError("special_tokens must be a list of token names or a {name: id} dict.")
        self.path = resolve_file(path, "tiktoken BPE ranks", "tokenizer.model")
        data, self.sha256 = read_checked(self.path, sha256)
        ranks = parse_ranks(data, self.path)
        if pat_str is None or special_tokens is None or eot is None:
            # The sidecar's values become explicit spec fields, so a checkpoint's spec rebuilds
            # the same tokenizer even if the sidecar is later lost.
            sidecar = read_sidecar(self.path, self.sha256)
            if sidecar is not None:
                pat_str = sidecar["pat_str"] if pat_str is None else pat_str
                if special_tokens is None:
                    special_tokens = sidecar["special_tokens"]
                    eot = sidecar["eot"] if eot is None else eot
        self._ranks = ranks
        self._pat_str = pat_str
        self._special_tokens = special_tokens
        self.num_threads = num_threads
        if special_tokens is None or not isinstance(special_tokens, Mapping):
            first = max(ranks.values()) + 1
            names = LLAMA3_SPECIAL_TOKENS if special_tokens is None else special_tokens
            specials = {token: first + i for i, token in enumerate(names)}
        else:
            specials = dict(special_tokens)
        clashes = set(specials.values()) & set(ranks.values())
        if clashes:
            raise ValueError(
                f"Special token ids {sorted(clashes)[:5]} are also ranks in {self.path!r}; give "
                "special_tokens ids above the highest rank, or a list to place them there."
            )
        self.eot_text = self._resolve_eot(eot, specials)
        self.special_token_ids: dict[str, int] = specials
        self.pattern: str = LLAMA3_PATTERN if pat_str is None else pat_str
        self.cut_safe: bool = self.pattern in CUT_SAFE_PATTERNS
        try:
            self._encoding = tiktoken.Encoding(
                name=os.path.basename(self.path),
                pat_str=self.pattern,
                mergeable_ranks=ranks,
                special_tokens=specials,
            )
        except ValueError as err:  # tiktoken's message for a regex it cannot compile
            raise ValueError(f"Bad pattern for {self.path!r}: {err}") from None
        self.vocab_size: int = self._encoding.n_vocab
        self.eot_id: int = specials[self.eot_text]

    def _resolve_eot(self, eot: str | int | None, specials: Mapping[str, int]) -> str:
        """Return the name of the separator token, which must be special (text cannot forge it)."""
        if isinstance(eot, int):
            by_id = {token_id: token for token, token_id in specials.items()}
            if eot in by_id:
                return by_id[eot]
        elif eot is None:
            found = next((token for token in EOT_CANDIDATES if token in specials), None)
            if found is not None:
                return found
        elif eot in specials:
            return eot
        raise ValueError(
            f"eot={eot!r} is not one of the special tokens of this tiktoken tokenizer "
            f"({self.path!r}). Name the document separator with 'eot' in the spec; it must be a "
            "special token, so that ordinary text can never encode to it."
        )

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable dict from which ``get_tokenizer`` rebuilds this tokenizer."""
        spec: dict[str, Any] = {"name": self.name, "path": self.path, "sha256": self.sha256}
        if self._pat_str is not None:
            spec["pat_str"] = self._pat_str
        if self._special_tokens is not None:
            special = self._special_tokens
            spec["special_tokens"] = (
                dict(special) if isinstance(special, Mapping) else list(special)
            )
        spec["eot"] = self.eot_text
        return spec

    @property
    def mergeable_ranks(self) -> dict[bytes, int]:
        """The ranks file's ``{token bytes: rank}`` (what ``export`` converts to merges)."""
        return dict(self._ranks)

    def encode(
        self, text: str, allowed_special: Collection[str] | Literal["all"] = frozenset()
    ) -> list[int]:
        """Encode ``text``; special-token text in it is plain text unless ``allowed_special``.

        Args:
            text: The text.
            allowed_special: Special tokens whose text becomes their reserved id (``"all"``:
                every one), as in tiktoken. The default allows none, so that untrusted text can
                never forge a document boundary or a chat marker.
        """
        if not allowed_special:
            return self._encoding.encode_ordinary(text)
        allowed = allowed_special if allowed_special == "all" else set(allowed_special)
        return self._encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts in parallel with tiktoken's thread pool."""
        return self._encoding.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def encode_to_numpy(self, text: str) -> npt.NDArray[np.uint32]:
        """Encode ``text`` straight into a 1-D uint32 array (possibly read-only)."""
        return self._encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids; ``eot_id`` becomes ``EOT_TEXT`` and invalid UTF-8 becomes U+FFFD.

        Raises:
            ValueError: An id outside ``range(vocab_size)``.
        """
        id_list = as_id_list(ids, self.vocab_size)
        if self.eot_id not in id_list:
            return self._encoding.decode(id_list)
        pieces, start = [], 0
        for i, token in enumerate([*id_list, self.eot_id]):
            if token == self.eot_id:
                pieces.append(self._encoding.decode(id_list[start:i]))
                start = i + 1
        return EOT_TEXT.join(pieces)

    def __reduce__(self) -> tuple[type["TiktokenFileTokenizer"], tuple[Any, ...]]:
        """Pickle the spec only; workers re-read (and re-verify) the file."""
        return (
            TiktokenFileTokenizer,
            (
                self.path,
                self._pat_str,
                self._special_tokens,
                self.eot_text,
                self.sha256,
                self.num_threads,
            ),
        )

    def __repr__(self) -> str:
        return f"TiktokenFileTokenizer(path={self.path!r}, vocab_size={self.vocab_size})"
