"""Sampling settings: the one place their defaults are written.

``llm-torch generate``'s options, ``predict``'s ``model.sampling`` and the text samples logged
during training all start from :class:`SamplingConfig`'s defaults, so a change here reaches
every one. It imports nothing, so engine and command-line code read it without loading
generation code.
"""

from dataclasses import dataclass


@dataclass
class SamplingConfig:
    """How a prompt is continued (see :func:`llm_torch.generation.generate`).

    Attributes:
        max_new_tokens: Tokens added after the prompt.
        temperature: Softmax temperature; 0 is greedy.
        top_k: Sample among the ``top_k`` most likely tokens (``None``: all).
        top_p: Sample from the smallest set of tokens whose probabilities reach ``top_p``
            (``None``: no nucleus cut).
        seed: Seed of the private sampling generator.
    """

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    seed: int = 1337


#: The defaults, for signatures and parsers that take the settings one by one.
SAMPLING_DEFAULTS = SamplingConfig()
