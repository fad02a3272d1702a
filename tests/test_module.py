"""CausalLMModule pieces that need no trainer."""

import math

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


# Vocabulary 11 padded to 16 columns: a loss that let the padding into the softmax would differ.
ARCHS = {
    "gpt": GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16, pad_vocab_size_multiple=16),
    "llama": LlamaConfig(
        block_size=8, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, pad_vocab_size_multiple=16
    ),
}


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_loss_matches_transformers_loss_with_labels(arch: str) -> None:
    pytest.importorskip("transformers")
    from llm_torch.interop import to_hf

    torch.manual_seed(0)
    module = CausalLMModule(ARCHS[arch], vocab_size=11).eval()
    module.configure_model()
    module.configure_model()  # idempotent: Lightning may call it again
    with torch.no_grad():  # sharpen the logits far from uniform, so every weight shows in the loss
        for param in module.parameters():
            param.mul_(10)
    seq = torch.randint(0, 11, (3, 8))  # block_size tokens: 7 inputs and their 7 next tokens
    inputs, targets = seq[:, :-1], seq[:, 1:]
    assert module(inputs).shape == (3, 7, 11)
    hf = to_hf(module.model).eval()  # real vocabulary only: transformers' softmax has 11 columns
    with torch.no_grad():
        expected = hf(seq, labels=seq).loss.item()  # transformers shifts the labels itself
        loss = module._loss((inputs, targets)).item()
    assert abs(expected - math.log(11)) > 0.5  # far from the uniform loss: the weights matter
    assert loss == pytest.approx(expected, rel=1e-5)


def test_loss_of_uniform_logits_is_log_of_the_real_vocabulary_size() -> None:
    torch.manual_seed(0)
    module = CausalLMModule(ARCHS["gpt"], vocab_size=11)
    module.configure_model()
    assert module.model.lm_head.weight.shape[0] == 16  # the head has 5 padding columns
    with torch.no_grad():
        module.model.lm_head.weight.zero_()  # every logit 0: uniform over the 11 real tokens
    idx = torch.randint(0, 11, (2, 8))
    loss = module._loss((idx, idx.roll(-1, 1)))
    assert loss.item() == pytest.approx(math.log(11), rel=1e-6)  # log(16) if padding leaked in
