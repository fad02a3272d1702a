"""Tokenizers: tiktoken encodings plus byte- and character-level tokenizers."""
