"""Tokenizers: tiktoken encodings plus byte- and character-level tokenizers.

Use ``get_tokenizer("gpt2")`` (or ``"byte"``, ``"char"``...) and store ``tokenizer.spec`` to
rebuild the same tokenizer later with ``get_tokenizer(spec)``.
"""

from llm_torch.tokenizer.base import EOT_TEXT, Tokenizer, TokenizerUnavailableError
from llm_torch.tokenizer.bpe import TIKTOKEN_ENCODINGS, TiktokenTokenizer
from llm_torch.tokenizer.byte import ByteTokenizer
from llm_torch.tokenizer.char import CharTokenizer
from llm_torch.tokenizer.factory import TOKENIZER_NAMES, get_tokenizer

__all__ = [
    "EOT_TEXT",
    "TIKTOKEN_ENCODINGS",
    "TOKENIZER_NAMES",
    "ByteTokenizer",
    "CharTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "TokenizerUnavailableError",
    "get_tokenizer",
]
