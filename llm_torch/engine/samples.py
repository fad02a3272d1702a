"""Text samples during training: what the model writes, in TensorBoard after each validation."""

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from llm_torch.architectures.base import DecoderLM
from llm_torch.engine.module import CausalLMModule
from llm_torch.generation import generate
from llm_torch.sampling import SAMPLING_DEFAULTS


def _model(pl_module: LightningModule) -> DecoderLM:
    """The architecture inside a ``CausalLMModule``."""
    if not isinstance(pl_module, CausalLMModule):
        raise TypeError(f"llm-torch callbacks expect a CausalLMModule, got {type(pl_module)}.")
    if pl_module.model is None:
        raise RuntimeError("The model is built in configure_model(); call it (or fit) first.")
    return pl_module.model


class TextSampleLogger(Callback):
    """Write a short generated sample to TensorBoard's text tab after each validation.

    Reading what the model writes is the quickest sanity check of a run. Sampling uses a private
    RNG, so it does not change the training trajectory.

    Args:
        prompt: Text to continue; empty starts from the end-of-text token.
        max_new_tokens: Length of the sample in tokens.
        temperature: Sampling temperature (0: greedy).
        top_k: Sample among the ``top_k`` most likely tokens.
        seed: Seed of the sampling RNG; 0 rather than the shared sampling default, so training
            samples keep the draws they have always had.
    """

    def __init__(
        self,
        prompt: str = "",
        max_new_tokens: int = SAMPLING_DEFAULTS.max_new_tokens,
        temperature: float = SAMPLING_DEFAULTS.temperature,
        top_k: int | None = SAMPLING_DEFAULTS.top_k,
        seed: int = 0,
    ) -> None:
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Generate on every rank (sharded models need all of them), write on rank zero."""
        tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if trainer.sanity_checking or tokenizer is None:
            return
        prompt = tokenizer.encode(self.prompt) if self.prompt else [tokenizer.eot_id]
        model = _model(pl_module)
        was_training = model.training
        model.eval()
        # Eager: one-token decode steps would recompile the training graph of compiled blocks.
        with torch.compiler.set_stance("force_eager"):
            ids = generate(
                model,
                torch.tensor([prompt], device=pl_module.device),
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                seed=self.seed,
                # The cache holds at most block_size tokens; longer samples slide the context.
                use_cache=len(prompt) + self.max_new_tokens <= model.config.block_size,
            )
        # generate keeps its cache for the next call; training must not carry it until then.
        model.clear_cache()
        model.train(was_training)
        if trainer.is_global_zero:
            text = tokenizer.decode(ids[0])
            # Indented lines render as preformatted text: keeps line breaks and stage layout.
            markdown = "\n".join("    " + line for line in text.splitlines())
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_text("samples", markdown, trainer.global_step)
