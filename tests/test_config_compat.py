"""Checkpoints and configs from before the shared ``DecoderConfig`` still work.

The fixtures were written by llm-torch before the change (``tests/fixtures``): a 1-layer GPT and
a 1-layer Llama trained 2 steps, with the logits they gave for fixed ids at the time.
"""

from pathlib import Path

import pytest
import torch
from cli_helpers import GPT2_ARCH, REPO, tiny_args, write_corpus

from llm_torch.architectures import GPTConfig
from llm_torch.cli import cli
from llm_torch.engine.checkpoint import load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_pre_refactor_checkpoint_gives_the_logits_it_gave(arch: str) -> None:
    expected = torch.load(FIXTURES / "pre_decoder_config_logits.pt", weights_only=True)
    with pytest.warns(FutureWarning, match="layer_norm_eps"):  # saved under the former name
        model, tokenizer = load_checkpoint(FIXTURES / f"pre_decoder_config_{arch}.ckpt")
    assert tokenizer is not None and tokenizer.spec == {"name": "byte"}
    with torch.no_grad():
        torch.testing.assert_close(model(expected["ids"]), expected[arch], rtol=0, atol=0)


def test_pre_refactor_checkpoint_validates_through_the_cli(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = REPO / "configs" / "shakespeare-char.yaml"
    ckpt = FIXTURES / "pre_decoder_config_gpt.ckpt"
    # The checkpoint predates rotary GPT and QK-norm: its hyperparameters lack them, so the
    # config's values stand, and they must be the ones it was trained with.
    args = [
        *tiny_args(tmp_path, corpus),
        *GPT2_ARCH,
        "--data.tokenizer=byte",
        f"--ckpt_path={ckpt}",
    ]
    with pytest.warns(FutureWarning, match="layer_norm_eps"):
        run = cli(["validate", f"--config={config}", *args])
    assert run.model.config.n_embd == 16 and run.model.config.norm_eps == 1e-5
    assert torch.isfinite(run.trainer.callback_metrics["val/loss"])


def test_former_config_key_is_read_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match=r"layer_norm_eps is deprecated and read as norm_eps"):
        assert GPTConfig(layer_norm_eps=1e-6).norm_eps == 1e-6
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = REPO / "configs" / "shakespeare-char.yaml"
    args = [*tiny_args(tmp_path, corpus), "--model.arch.init_args.layer_norm_eps=1e-6"]
    with pytest.warns(FutureWarning):
        run = cli(["fit", f"--config={config}", *args])
    assert run.model.config.norm_eps == 1e-6
    assert run.model.model.ln_f.eps == 1e-6


def test_a_config_override_keeps_the_architecture(tmp_path: Path) -> None:
    # A union of the architectures used to re-pick the class on each override: Llama became GPT.
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = REPO / "configs" / "llama-nano.yaml"
    args = [*tiny_args(tmp_path, corpus, steps=1), "--model.arch.init_args.n_layer=1"]
    run = cli(["fit", f"--config={config}", *args])
    assert type(run.model.config).__name__ == "LlamaConfig" and run.model.config.n_layer == 1
    assert type(run.model.model).__name__ == "Llama"
