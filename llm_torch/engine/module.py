"""``CausalLMModule``: next-token training of any llm-torch architecture with Lightning."""

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.aggregation import MeanMetric

from llm_torch.architectures.gpt import GPTConfig
from llm_torch.architectures.registry import Model, ModelConfig, build_model, config_to_dict
from llm_torch.data.prompts import Prompt
from llm_torch.engine.checkpoint import CHECKPOINT_KEY
from llm_torch.engine.optim import warmup_cosine, weight_decay_groups
from llm_torch.generation import generate

#: Config fields that may differ between saved weights and the model loading them.
_COMPATIBLE_FIELDS = {"dropout", "pad_vocab_size_multiple"}

Batch = tuple[Tensor, Tensor]


@dataclass
class SamplingConfig:
    """How ``predict`` continues each prompt (see :func:`llm_torch.generation.generate`)."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    seed: int = 1337


class CausalLMModule(LightningModule):
    """Trains an architecture on next-token prediction.

    The architecture is chosen by the type of ``arch`` (``GPTConfig`` builds a ``GPT``, ...),
    built in :meth:`configure_model` so sharded strategies can shard it as it is created.

    Args:
        arch: The architecture's config.
        vocab_size: Overrides ``arch.vocab_size``; the CLI links it from the data module so the
            vocabulary is never typed twice.
        lr: Peak learning rate.
        min_lr: Learning rate at the end of the cosine decay.
        warmup_steps: Optimizer steps of linear warmup.
        lr_decay_steps: Optimizer step at which the cosine reaches ``min_lr``; ``None`` means the
            Trainer's ``max_steps``.
        weight_decay: AdamW decay on weight matrices (not biases, norms or embeddings).
        betas: AdamW betas.
        eps: AdamW epsilon.
        compile: ``torch.compile`` each transformer block (off by default: CPU compiles are slow
            to start and rarely pay off).
        sampling: Generation settings of ``llm-torch predict``.
        init_from: A Hugging Face ``save_pretrained`` folder (GPT-2 or Llama) whose weights
            initialise the model, to continue pre-training or fine-tune; ``arch`` must describe
            the same model (dropout and vocabulary padding may differ).
    """

    def __init__(
        self,
        arch: ModelConfig = GPTConfig(),  # noqa: B008 (dataclass default, never mutated)
        vocab_size: int | None = None,
        lr: float = 6e-4,
        min_lr: float = 6e-5,
        warmup_steps: int = 100,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        compile: bool = False,
        init_from: str | None = None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        super().__init__()
        if vocab_size is not None:
            arch = replace(arch, vocab_size=vocab_size)
        if not 0 < min_lr <= lr:
            raise ValueError(f"Need 0 < min_lr <= lr, got min_lr={min_lr}, lr={lr}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.config = arch
        self.lr = lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.lr_decay_steps = lr_decay_steps
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.compile_blocks = compile
        self.init_from = init_from
        self.sampling = sampling or SamplingConfig()
        # Plain data in LightningCLI's own format: checkpoints load with
        # torch.load(weights_only=True), and `--ckpt_path` alone tells the CLI the model. The
        # CLI lets these override the command line, so run-time choices (compile, init_from,
        # sampling) stay out.
        self.save_hyperparameters(
            {
                "arch": {
                    "class_path": f"{type(arch).__module__}.{type(arch).__name__}",
                    "init_args": asdict(arch),
                },
                "lr": lr,
                "min_lr": min_lr,
                "warmup_steps": warmup_steps,
                "lr_decay_steps": lr_decay_steps,
                "weight_decay": weight_decay,
                "betas": list(betas),
                "eps": eps,
            }
        )
        self.model: Model | None = None
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def configure_model(self) -> None:
        """Build the architecture on the training device (once; Lightning may call this again).

        The model is materialised and initialised on each device before any sharding, so every
        architecture's own initialisation (and weight tying) applies unchanged. Under
        ``ModelParallelStrategy`` each transformer block is then sharded with FSDP2's
        ``fully_shard``, followed by the root (embeddings, head), torchtitan's order after compile.
        """
        if self.model is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        with torch.device(device):
            model = build_model(self.config)
        if self.init_from is not None:
            self._load_pretrained(model, self.init_from)
        if self.compile_blocks:
            for block in model.blocks:
                block.compile()
        if self.device_mesh is not None:
            from torch.distributed.fsdp import fully_shard

            if self.device_mesh["tensor_parallel"].size() > 1:
                raise ValueError(
                    "Tensor parallelism is not implemented yet: use ModelParallelStrategy with "
                    "tensor_parallel_size: 1 (FSDP2 across all devices), e.g. "
                    "data_parallel_size: auto."
                )
            mesh = self.device_mesh["data_parallel"]
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        self.model = model

    def setup(self, stage: str) -> None:
        """Check that the data's windows fit the model's context before anything runs."""
        data_block_size = getattr(getattr(self._trainer, "datamodule", None), "block_size", None)
        if data_block_size is not None and data_block_size > self.config.block_size:
            raise ValueError(
                f"data.block_size ({data_block_size}) exceeds the model's block_size "
                f"({self.config.block_size}). Lower data.block_size, or raise "
                "model.arch.block_size (a new model, or one imported with a longer context)."
            )

    def _load_pretrained(self, model: Model, folder: str) -> None:
        """Copy Hugging Face weights into ``model`` after checking that the shapes agree."""
        from llm_torch.interop.hf import from_hf

        pretrained = from_hf(folder)
        differences = _config_differences(config_to_dict(pretrained.config), self.config)
        if differences:
            raise ValueError(
                f"model.init_from {folder!r} holds a different model than model.arch "
                f"({differences}). Set model.arch to the pretrained model's shape, and train with "
                "its tokenizer (the vocabulary size comes from data.tokenizer)."
            )
        with torch.no_grad():
            target = model.state_dict()
            for name, tensor in pretrained.state_dict().items():
                target[name][: tensor.shape[0]].copy_(tensor)  # padded vocab rows keep their init

    @property
    def net(self) -> Model:
        """The architecture, built by :meth:`configure_model`."""
        if self.model is None:
            raise RuntimeError("The model is built in configure_model(); call it (or fit) first.")
        return self.model

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits for token ids ``idx`` of shape ``(B, T)``."""
        logits: Tensor = self.net(idx)
        return logits

    def _loss(self, batch: Batch) -> Tensor:
        inputs, targets = batch
        logits = self.net(inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Cross-entropy on one micro-batch; logged lazily (no host-device sync per step)."""
        loss = self._loss(batch)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False)
        optimizer = self.optimizers()
        assert isinstance(optimizer, LightningOptimizer)
        self.log("lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate the token-weighted validation loss."""
        self.val_loss.update(self._loss(batch), weight=batch[1].numel())

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss`` and ``val/ppl`` over all batches and ranks."""
        self._log_loss_and_perplexity("val", self.val_loss)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate the token-weighted test loss."""
        self.test_loss.update(self._loss(batch), weight=batch[1].numel())

    def on_test_epoch_end(self) -> None:
        """Log ``test/loss`` and ``test/ppl`` over all batches and ranks."""
        self._log_loss_and_perplexity("test", self.test_loss)

    def predict_step(self, batch: list[Prompt], batch_idx: int) -> list[Prompt]:
        """Continue each ``(index, text, ids)`` prompt; returns ``(index, text, new_ids)``.

        Prompts longer than the context keep their last ``block_size - 1`` tokens, and every
        prompt in the batch gets as many new tokens as the longest leaves room for.
        """
        tokenizer = getattr(getattr(self._trainer, "datamodule", None), "tokenizer", None)
        block_size = self.net.config.block_size
        prompts = [ids[-(block_size - 1) :] for _, _, ids in batch]
        outputs = generate(
            self.net,
            prompts,
            min(self.sampling.max_new_tokens, block_size - max(map(len, prompts))),
            temperature=self.sampling.temperature,
            top_k=self.sampling.top_k,
            top_p=self.sampling.top_p,
            eos_id=tokenizer.eot_id if tokenizer is not None else None,
            seed=self.sampling.seed + batch_idx,
        )
        return [
            (index, text, out[len(prompt) :])
            for (index, text, _), prompt, out in zip(batch, prompts, outputs, strict=True)
        ]

    def _log_loss_and_perplexity(self, stage: str, metric: MeanMetric) -> None:
        loss = metric.compute()  # reduces across ranks
        metric.reset()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/ppl": loss.exp()}, prog_bar=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW (fused on CUDA) with warmup + cosine decay, stepped per optimizer step."""
        decay_steps = self.lr_decay_steps or self.trainer.max_steps
        if decay_steps is None or decay_steps <= 0:
            raise ValueError(
                "The learning-rate schedule needs a length: set trainer.max_steps or "
                "model.lr_decay_steps (both count optimizer steps)."
            )
        optimizer = torch.optim.AdamW(
            weight_decay_groups(self.net, self.weight_decay),
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            fused=True if self.device.type == "cuda" else None,
        )
        schedule = partial(
            warmup_cosine,
            warmup_steps=self.warmup_steps,
            decay_steps=decay_steps,
            min_ratio=self.min_lr / self.lr,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the model config and tokenizer spec, so the checkpoint stands on its own."""
        datamodule = getattr(self._trainer, "datamodule", None)
        tokenizer = getattr(datamodule, "tokenizer", None)
        checkpoint[CHECKPOINT_KEY] = {
            "model": config_to_dict(self.config),
            "tokenizer": tokenizer.spec if tokenizer is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture or shape with a message, not a traceback."""
        saved = checkpoint.get(CHECKPOINT_KEY, {}).get("model")
        if saved is None:
            return
        differences = _config_differences(saved, self.config)
        if differences:
            raise ValueError(
                f"The checkpoint was trained with a different model ({differences}). Use the "
                "config the checkpoint was trained with, or a checkpoint of this model."
            )


def _config_differences(saved: dict[str, Any], config: ModelConfig) -> str:
    """List the fields where saved weights' config and ``config`` disagree ("" if compatible)."""
    ours = config_to_dict(config)
    return ", ".join(
        f"{key}: checkpoint {saved.get(key)!r} vs config {ours.get(key)!r}"
        for key in sorted(saved.keys() | ours.keys())
        if key not in _COMPATIBLE_FIELDS and saved.get(key) != ours.get(key)
    )
