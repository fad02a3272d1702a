"""Tokenizers: tiktoken encodings, byte- and character-level tokenizers, and tokenizer files.

Use ``get_tokenizer("gpt2")`` (or ``"byte"``, ``"char"``, ``"tiktoken:/path/tokenizer.model"``,
``"hf:/path/tokenizer.json"``...) and store ``tokenizer.spec`` to rebuild the same tokenizer later
with ``get_tokenizer(spec)``.
"""

from llm_torch.tokenizer.base import EOT_TEXT, Tokenizer, TokenizerUnavailableError
from llm_torch.tokenizer.bpe import TIKTOKEN_ENCODINGS, TiktokenTokenizer
from llm_torch.tokenizer.byte import ByteTokenizer
from llm_torch.tokenizer.char import CharTokenizer
from llm_torch.tokenizer.factory import FILE_TOKENIZERS, TOKENIZER_NAMES, get_tokenizer
from llm_torch.tokenizer.hf_file import HFTokenizer
from llm_torch.tokenizer.tiktoken_file import (
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    TiktokenFileTokenizer,
)

__all__ = [
    "EOT_TEXT",
    "FILE_TOKENIZERS",
    "LLAMA3_PATTERN",
    "LLAMA3_SPECIAL_TOKENS",
    "TIKTOKEN_ENCODINGS",
    "TOKENIZER_NAMES",
    "ByteTokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "TiktokenFileTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "TokenizerUnavailableError",
    "get_tokenizer",
]
