"""Architecture registry: which config builds which model, and configs as plain data.

Checkpoints store a model's config as a JSON-like dict tagged with its architecture name, so
they load with ``torch.load(weights_only=True)`` and rebuild the model without the YAML. A new
architecture registers its config class and model class in :data:`ARCHITECTURES`.
"""

from dataclasses import asdict
from typing import Any

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.config import DecoderConfig
from llm_torch.architectures.gpt import GPT, GPTConfig
from llm_torch.architectures.llama import Llama, LlamaConfig

#: Architecture name (stored in checkpoints) -> (config class, model class).
ARCHITECTURES: dict[str, tuple[type[DecoderConfig], type[DecoderLM]]] = {
    "gpt": (GPTConfig, GPT),
    "llama": (LlamaConfig, Llama),
}


def arch_name(config: DecoderConfig) -> str:
    """The registry name of a config's architecture."""
    for name, (config_cls, _) in ARCHITECTURES.items():
        if type(config) is config_cls:
            return name
    known = ", ".join(f"{cls.__module__}.{cls.__name__}" for cls, _ in ARCHITECTURES.values())
    raise TypeError(
        f"model.arch.class_path: {type(config).__name__} is not a registered architecture "
        f"config. Use one of {known}, or register yours in "
        "llm_torch.architectures.registry.ARCHITECTURES."
    )


def build_model(config: DecoderConfig) -> DecoderLM:
    """Instantiate the architecture that ``config`` describes."""
    return ARCHITECTURES[arch_name(config)][1](config)


def config_to_dict(config: DecoderConfig) -> dict[str, Any]:
    """Plain-data form of a config: its fields plus ``"arch"``."""
    return {"arch": arch_name(config), **asdict(config)}


def resolved_fields(config: DecoderConfig) -> dict[str, Any]:
    """:func:`config_to_dict` with derived fields resolved (``mlp_hidden``, ``head_dim``, ...).

    Two configs build the same model exactly when these are equal.
    """
    return {
        name: getattr(config, f"resolved_{name}", value)
        for name, value in config_to_dict(config).items()
    }


def config_from_dict(data: dict[str, Any]) -> DecoderConfig:
    """Inverse of :func:`config_to_dict`; also reads dicts saved under former field names."""
    fields = dict(data)
    arch = fields.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {arch!r} in model config; known: {sorted(ARCHITECTURES)}."
        )
    return ARCHITECTURES[arch][0](**fields)
