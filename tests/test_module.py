"""CausalLMModule pieces that need no trainer."""

import pytest
import torch

from llm_torch.architectures import GPTConfig, LlamaConfig
from llm_torch.engine.module import CausalLMModule


def test_checkpoint_of_another_architecture_is_refused_by_name() -> None:
    gpt = CausalLMModule(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16))
    checkpoint: dict[str, object] = {}
    gpt.on_save_checkpoint(checkpoint)
    llama = CausalLMModule(
        LlamaConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)
    )
    with pytest.raises(ValueError, match=r"arch: checkpoint 'gpt' vs config 'llama'"):
        llama.on_load_checkpoint(checkpoint)


def test_forward_and_loss_use_the_built_architecture() -> None:
    torch.manual_seed(0)
    module = CausalLMModule(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16), vocab_size=11)
    module.configure_model()
    module.configure_model()  # idempotent: Lightning may call it again
    idx = torch.randint(0, 11, (2, 8))
    logits = module(idx)
    assert logits.shape == (2, 8, 11)
    expected = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 11), idx.roll(-1, 1).reshape(-1)
    )
    assert module._loss((idx, idx.roll(-1, 1))).item() == pytest.approx(expected.item())
