"""Each config as written, as far as a CPU can run it: precision, optimizer, clipping, strategy.

``test_cli``'s every-config test overrides precision and strategy to prove the YAML parses and
trains. Here only what a CPU cannot honour is replaced (the GPU accelerator, all devices, a
compile that takes minutes, the model's size, the user's tokenizer file); the precision, the
strategy and the clipping are the config's own, so the path that crashed on every GPU config
(clipping a fused AdamW under bf16-mixed) runs here, under FSDP2 where the config says so.
"""

from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import CONFIGS, tiny_args, tiny_model_args, tokenizer_args, write_corpus
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from llm_torch.cli import LLMCLI, cli
from llm_torch.data import TextDataModule
from llm_torch.engine.module import CausalLMModule
from llm_torch.engine.optim import OptimizerChain

GPU_CONFIGS = [
    c for c in CONFIGS if yaml.safe_load(c.read_text())["trainer"]["accelerator"] == "gpu"
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _as_written_on_cpu(config: Path, tmp_path: Path, corpus: Path, tiny_bpe: Path) -> list[str]:
    arch = "llama" if "Llama" in config.read_text() else "gpt"
    written = yaml.safe_load(config.read_text())["trainer"]
    replaced = ("--trainer.precision=", "--trainer.strategy=")
    args = [arg for arg in tiny_args(tmp_path, corpus, steps=2) if not arg.startswith(replaced)]
    args += [*tiny_model_args(arch), *tokenizer_args(config, tiny_bpe)]
    args += ["--batch.global_batch_size=4"]  # micro-batches of 2: accumulate 2, as GPUs would
    assert written["precision"] == "bf16-mixed" and written["gradient_clip_val"] == 1.0
    return args


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=[c.stem for c in GPU_CONFIGS])
def test_gpu_config_clips_a_fused_adamw_under_its_own_precision(
    config: Path, tmp_path: Path, corpus: Path, tiny_bpe: Path
) -> None:
    args = ["fit", f"--config={config}", *_as_written_on_cpu(config, tmp_path, corpus, tiny_bpe)]
    run = cli(args)  # the config's strategy too, on one process: FSDP2 shards over one rank
    trainer, module = run.trainer, run.model
    assert isinstance(module, CausalLMModule)
    assert trainer.precision == "bf16-mixed"
    assert isinstance(trainer.precision_plugin, MixedPrecision)
    assert trainer.gradient_clip_val == 1.0
    optimizer = trainer.optimizers[0]
    if isinstance(optimizer, OptimizerChain):  # Muon on the matrices, AdamW on the rest
        optimizer = optimizer.optimizers[-1]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    assert trainer.global_step == 2  # both steps went through clipping
    assert module.grad_norm is not None and torch.isfinite(module.grad_norm)


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=[c.stem for c in GPU_CONFIGS])
def test_gpu_config_strategy_is_ddp_or_fsdp_on_several_devices(
    config: Path, tmp_path: Path, corpus: Path, tiny_bpe: Path
) -> None:
    # Parsed for two CPU processes (not run): the strategy each config gets on N devices.
    args = [f"--config={config}", *_as_written_on_cpu(config, tmp_path, corpus, tiny_bpe)]
    parsed = LLMCLI(CausalLMModule, TextDataModule, run=False, args=[*args, "--trainer.devices=2"])
    strategy = parsed.trainer.strategy
    written = yaml.safe_load(config.read_text())["trainer"]["strategy"]
    if written == "auto":
        assert isinstance(strategy, DDPStrategy)  # one device would get no wrapper at all
    else:
        assert isinstance(strategy, ModelParallelStrategy)


def test_muon_under_fsdp2_is_refused_with_the_fix(
    tmp_path: Path, corpus: Path, tiny_bpe: Path
) -> None:
    config = CONFIGS[0].parent / "gpt2-medium.yaml"  # FSDP2 as written
    args = [*_as_written_on_cpu(config, tmp_path, corpus, tiny_bpe), "--model.optimizer.name=muon"]
    with pytest.raises(ValueError, match=r"muon needs whole weight matrices.*strategy: ddp"):
        cli(["fit", f"--config={config}", *args])
