"""Evaluation: lm-evaluation-harness tasks, perplexity on any text, multiple choice in training.

``LLMTorchLM`` needs lm-evaluation-harness (the ``eval`` extra) and is imported on first use, so
``import llm_torch.evaluation`` (and the ``llm-torch`` command) stay fast without it.
"""

from typing import TYPE_CHECKING, Any

from llm_torch.evaluation.scoring import Perplexity, encode_pair, perplexity, rolling_windows

if TYPE_CHECKING:
    from llm_torch.evaluation.lm import LLMTorchLM

__all__ = ["LLMTorchLM", "Perplexity", "encode_pair", "perplexity", "rolling_windows"]


def __getattr__(name: str) -> Any:
    """Import ``LLMTorchLM`` (and with it lm-evaluation-harness) when it is first asked for."""
    if name == "LLMTorchLM":
        from llm_torch.evaluation.lm import LLMTorchLM

        return LLMTorchLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
