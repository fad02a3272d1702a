"""Model assemblies (GPT-2, later Llama) built from the shared components."""

from llm_torch.architectures.gpt import GPT, GPT_PRESETS, GPTConfig

__all__ = ["GPT", "GPT_PRESETS", "GPTConfig"]
