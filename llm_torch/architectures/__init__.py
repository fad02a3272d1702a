"""Model assemblies (GPT-2, Llama) built from the shared components."""

from llm_torch.architectures.gpt import GPT, GPT_PRESETS, GPTConfig
from llm_torch.architectures.llama import LLAMA_PRESETS, Llama, LlamaConfig

__all__ = ["GPT", "GPT_PRESETS", "LLAMA_PRESETS", "GPTConfig", "Llama", "LlamaConfig"]
