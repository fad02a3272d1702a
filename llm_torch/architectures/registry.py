"""Architecture registry: which config builds which model, and configs as plain data.

Checkpoints store a model's config as a JSON-like dict tagged with its architecture name, so
they load with ``torch.load(weights_only=True)`` and rebuild the model without the YAML.
"""

from dataclasses import asdict
from typing import Any

from llm_torch.architectures.gpt import GPT, GPTConfig
from llm_torch.architectures.llama import Llama, LlamaConfig

#: Every architecture's config type. The CLI accepts any of them for ``--model.arch``.
ModelConfig = GPTConfig | LlamaConfig
#: Every architecture: ``forward(idx) -> logits``, ``config``, ``flops_per_token``, ...
Model = GPT | Llama

#: Architecture name -> (config class, model class).
ARCHITECTURES: dict[str, tuple[type[Any], type[GPT] | type[Llama]]] = {
    "gpt": (GPTConfig, GPT),
    "llama": (LlamaConfig, Llama),
}


def _arch_name(config: ModelConfig) -> str:
    """The registry name of a config's architecture."""
    for name, (config_cls, _) in ARCHITECTURES.items():
        if type(config) is config_cls:
            return name
    raise TypeError(f"{type(config).__name__} is not a registered architecture config.")


def build_model(config: ModelConfig) -> Model:
    """Instantiate the architecture that ``config`` describes."""
    if isinstance(config, LlamaConfig):
        return Llama(config)
    return GPT(config)


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain-data form of a config: its fields plus ``"arch"``."""
    return {"arch": _arch_name(config), **asdict(config)}


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict`."""
    fields = dict(data)
    arch = fields.pop("arch", None)
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {arch!r} in model config; known: {sorted(ARCHITECTURES)}."
        )
    config: ModelConfig = ARCHITECTURES[arch][0](**fields)
    return config
