"""Conversion to and from other ecosystems (Hugging Face ``transformers``)."""

from llm_torch.interop.hf import from_hf, to_hf

__all__ = ["from_hf", "to_hf"]
