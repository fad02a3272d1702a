"""Model assemblies (GPT-2, Llama) built from the shared components on one config base."""

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.config import DecoderConfig
from llm_torch.architectures.gpt import GPT, GPT_PRESETS, GPTConfig
from llm_torch.architectures.llama import LLAMA_PRESETS, Llama, LlamaConfig

__all__ = [
    "GPT",
    "GPT_PRESETS",
    "LLAMA_PRESETS",
    "DecoderConfig",
    "DecoderLM",
    "GPTConfig",
    "Llama",
    "LlamaConfig",
]
