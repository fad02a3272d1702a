"""``CausalLMModule``: next-token training of any llm-torch architecture with Lightning.

One module on purpose: it is one ``LightningModule``, whose hooks Lightning calls on one
object. Each hook is short; most of the length is the Lightning behaviour each one works around.
"""

from dataclasses import asdict, replace
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.aggregation import MeanMetric

from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.config import DecoderConfig
from llm_torch.architectures.gpt import GPTConfig
from llm_torch.architectures.registry import (
    arch_name,
    build_model,
    config_from_dict,
    config_to_dict,
    resolved_fields,
)
from llm_torch.data.prompts import Prompt
from llm_torch.data.windows import Batch
from llm_torch.engine.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from llm_torch.engine.lightning_compat import optimizer_unscales_itself, set_logging_step
from llm_torch.engine.optim import OptimizerConfig, build_optimizer, warmup_cosine
from llm_torch.generation import generate
from llm_torch.sampling import SamplingConfig

#: Device types with a fused AdamW kernel.
_FUSED_ADAMW_DEVICES = {"cuda", "cpu", "mps", "xpu"}

#: Config fields that may differ between saved weights and the model loading them.
_COMPATIBLE_FIELDS = {"dropout", "pad_vocab_size_multiple"}


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
        optimizer: AdamW alone (the default), or Muon on the hidden matrices with AdamW on the
            rest, and per-role learning rates and decay; see
            :class:`~llm_torch.engine.optim.OptimizerConfig`.
        compile: ``torch.compile`` each transformer block and the loss head (off by default:
            CPU compiles are slow to start and rarely pay off).
        sampling: Generation settings of ``llm-torch predict``.
        init_from: A Hugging Face ``save_pretrained`` folder (GPT-2 or Llama) whose weights
            initialise the model, to continue pre-training or fine-tune; ``arch`` must describe
            the same model (dropout and vocabulary padding may differ).
    """

    def __init__(
        self,
        arch: DecoderConfig | None = None,
        vocab_size: int | None = None,
        lr: float = 6e-4,
        min_lr: float = 6e-5,
        warmup_steps: int = 100,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        optimizer: OptimizerConfig | None = None,
        compile: bool = False,
        init_from: str | None = None,
        sampling: SamplingConfig | None = None,
    ) -> None:
        super().__init__()
        arch = GPTConfig() if arch is None else arch
        arch_name(arch)  # an unregistered config class fails here, before any data is prepared
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
        self.optimizer_config = optimizer or OptimizerConfig()
        # `self.compile` would shadow nn.Module.compile(): the argument's name, kept private.
        self._compile = compile
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
                "optimizer": asdict(self.optimizer_config),
            }
        )
        #: The architecture, built by :meth:`configure_model` (``None`` until then). Its
        #: attribute name is the ``model.`` prefix of every checkpoint's state-dict keys.
        self.model: DecoderLM | None = None
        # nan_strategy="disable": the default checks every update for NaNs, a host sync.
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        #: Gradient norm of the last optimizer step, before clipping (a device tensor).
        self.grad_norm: Tensor | None = None

    def configure_model(self) -> None:
        """Build the architecture on the training device (once; Lightning may call this again).

        The model is materialised and initialised whole before any sharding, so every
        architecture's own initialisation (and weight tying) applies unchanged. Under
        ``ModelParallelStrategy`` it is built in host memory instead, and each transformer block
        is then sharded with FSDP2's ``fully_shard``, followed by the root (embeddings, head),
        torchtitan's order after compile: ``fully_shard`` moves a block to the device as it
        shards it, so the device never holds more than one whole block, and a model larger
        than one GPU (but not than host memory) can start.
        """
        if self.model is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        if device.type == "cuda":
            # TF32 for the few float32 matmuls autocast leaves (and for 32-true training).
            torch.set_float32_matmul_precision("high")
        with torch.device("cpu" if self.device_mesh is not None else device):
            model = build_model(self.config)
        if self.init_from is not None:
            self._load_pretrained(model, self.init_from)
        if self._compile:
            model.compile_for_training()
        if self.device_mesh is not None:
            self._shard(model)
        self.model = model

    def _shard(self, model: DecoderLM) -> None:
        """FSDP2: ``fully_shard`` each block, then the root (embeddings, head).

        Under ``bf16-mixed`` the all-gathered parameters are bfloat16 and gradients are reduced
        in float32 (torchtitan's policy): half the all-gather traffic, full-precision sums.
        """
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        assert self.device_mesh is not None
        if self.device_mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                "Tensor parallelism is not implemented yet: use ModelParallelStrategy with "
                "tensor_parallel_size: 1 (FSDP2 across all devices), e.g. "
                "data_parallel_size: auto."
            )
        precision = self.trainer.precision if self._trainer is not None else "32-true"
        policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if precision == "bf16-mixed" else None,
            reduce_dtype=torch.float32,
        )
        mesh = self.device_mesh["data_parallel"]
        for block in model.blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)

    def setup(self, stage: str) -> None:
        """Check that the data's windows fit the model's context before anything runs."""
        data_block_size = getattr(getattr(self._trainer, "datamodule", None), "block_size", None)
        if data_block_size is not None and data_block_size > self.config.block_size:
            raise ValueError(
                f"data.block_size ({data_block_size}) exceeds the model's block_size "
                f"({self.config.block_size}). Lower data.block_size, or raise "
                "model.arch.block_size (a new model, or one imported with a longer context)."
            )

    def _load_pretrained(self, model: DecoderLM, folder: str) -> None:
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

    def _built_model(self) -> DecoderLM:
        """:attr:`model`, typed as built; raises before :meth:`configure_model` has run."""
        if self.model is None:
            raise RuntimeError("The model is built in configure_model(); call it (or fit) first.")
        return self.model

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits for token ids ``idx`` of shape ``(B, T)``."""
        logits: Tensor = self._built_model()(idx)
        return logits

    def _loss(self, batch: Batch) -> Tensor:
        inputs, targets = batch
        loss: Tensor = self._built_model()(inputs, targets=targets)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Cross-entropy on one micro-batch.

        Nothing is logged here: :class:`~llm_torch.engine.monitor.TrainingMonitor` reads the
        loss from the device once per logged optimizer step, so the host never waits for the
        device in between.
        """
        return self._loss(batch)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Keep the step that metrics are logged at equal to the optimizer step.

        Lightning logs at its own counter of stepped batches, restored from the checkpoint and
        then adjusted by a guess at where the checkpoint was written; after a checkpoint
        written at validation or at the end of a run the guess is one off, and a resumed run
        logged every value one step late. With one optimizer the two counters are the same at
        every batch start, so the restored optimizer step is the truth.
        """
        set_logging_step(self.trainer, self.trainer.global_step)

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Measure the gradient norm, then clip, for every optimizer and precision.

        Lightning's mixed-precision plugin refuses to clip a fused optimizer (it unscales fp16
        gradients inside ``step``), which is what every GPU run uses. Here fp16 gradients are
        unscaled first (``GradScaler.step`` then sees them unscaled and only skips steps with
        infs), so the norm is the true one. ``grad_norm`` keeps it, before clipping, for logging.
        """
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and optimizer_unscales_itself(optimizer):
            scaler.unscale_(optimizer)  # other optimizers were unscaled by Lightning already
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if isinstance(norm, DTensor):  # FSDP2: per-shard partial norms, reduced here
            norm = norm.full_tensor()
        self.grad_norm = norm.detach()
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val, foreach=True)
        else:
            torch.nn.utils.clip_grads_with_norm_(
                self.parameters(), gradient_clip_val, norm, foreach=True
            )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate the token-weighted validation loss."""
        self.val_loss.update(self._loss(batch), weight=self._tokens(batch))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss`` and ``val/ppl`` over all batches and ranks."""
        self._log_loss_and_perplexity("val", self.val_loss)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Accumulate the token-weighted test loss."""
        self.test_loss.update(self._loss(batch), weight=self._tokens(batch))

    @staticmethod
    def _tokens(batch: Batch) -> Tensor:
        """Token count of a batch as a device tensor: an ``int`` weight costs a copy to device."""
        return torch.full((), batch[1].numel(), device=batch[1].device, dtype=torch.float32)

    def on_test_epoch_end(self) -> None:
        """Log ``test/loss`` and ``test/ppl`` over all batches and ranks."""
        self._log_loss_and_perplexity("test", self.test_loss)

    def predict_step(self, batch: list[Prompt], batch_idx: int) -> list[Prompt]:
        """Continue each ``(index, text, ids)`` prompt; returns ``(index, text, new_ids)``.

        Prompts longer than the context keep their last ``block_size - 1`` tokens, and every
        prompt in the batch gets as many new tokens as the longest leaves room for.
        """
        tokenizer = getattr(getattr(self._trainer, "datamodule", None), "tokenizer", None)
        model = self._built_model()
        block_size = model.config.block_size
        prompts = [ids[-(block_size - 1) :] for _, _, ids in batch]
        with torch.compiler.set_stance("force_eager"):  # decode shapes would recompile blocks
            outputs = generate(
                model,
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

    def on_predict_end(self) -> None:
        """Free the KV cache that ``generate`` keeps, so a later fit carries no cache buffers."""
        self._built_model().clear_cache()

    def _log_loss_and_perplexity(self, stage: str, metric: MeanMetric) -> None:
        loss = metric.compute()  # reduces across ranks
        metric.reset()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/ppl": loss.exp()}, prog_bar=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW (fused), or Muon and AdamW, with warmup + cosine decay per optimizer step.

        The fused AdamW kernel updates every parameter in one launch per dtype on GPU, and is
        also the fastest on CPU (5x a foreach step for the quickstart model). The schedule
        scales every group's own peak learning rate by the same factor.
        """
        decay_steps = self.lr_decay_steps or self.trainer.max_steps
        if decay_steps is None or decay_steps <= 0:
            raise ValueError(
                "The learning-rate schedule needs a length: set trainer.max_steps or "
                "model.lr_decay_steps (both count optimizer steps)."
            )
        if self.optimizer_config.name == "muon" and self.device_mesh is not None:
            raise ValueError(
                "model.optimizer.name: muon needs whole weight matrices (Newton-Schulz "
                "orthogonalises each one), and FSDP2 shards them across ranks. Train Muon with "
                "strategy: ddp (or auto on one device), or use model.optimizer.name: adamw."
            )
        optimizer = build_optimizer(
            self._built_model(),
            self.optimizer_config,
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=self.betas,
            eps=self.eps,
            fused=self.device.type in _FUSED_ADAMW_DEVICES,
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
            "format": CHECKPOINT_FORMAT,
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


def _config_differences(saved: dict[str, Any], config: DecoderConfig) -> str:
    """List the fields where saved weights' config and ``config`` disagree ("" if compatible).

    Derived fields compare by what they resolve to: ``mlp_hidden: None`` is the same model as
    the width its rule gives, which an imported config states explicitly.
    """
    saved = resolved_fields(config_from_dict(saved))  # also renames former field names
    ours = resolved_fields(config)
    return ", ".join(
        f"{key}: checkpoint {saved.get(key)!r} vs config {ours.get(key)!r}"
        for key in sorted(saved.keys() | ours.keys())
        if key not in _COMPATIBLE_FIELDS and saved.get(key) != ours.get(key)
    )
