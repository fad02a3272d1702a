"""Checkpoints and configs from before the shared ``DecoderConfig`` still work.

The fixtures were written by llm-torch before the change (``tests/fixtures``): two 1-layer GPTs
(``pre_decoder_config_llama.ckpt`` is one too, with biases and a given MLP width) trained 2 steps,
with the logits they gave for fixed ids at the time. Those logits were computed on one CPU: other
CPUs and torch builds round float32 differently (up to ~5e-8 seen), so they are compared to
1e-5, well below what a change to the model moves (the logits span ~0.6); ``transformers`` on the
exported weights is the independent reference, to the same tolerance and for greedy text exactly.
"""

from pathlib import Path

import pytest
import torch
from cli_helpers import GPT2_ARCH, REPO, tiny_args, write_corpus

from llm_torch.architectures import GPTConfig
from llm_torch.cli import cli
from llm_torch.engine.checkpoint import load_checkpoint
from llm_torch.generation import generate
from llm_torch.interop.hf import to_hf

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_pre_refactor_checkpoint_gives_the_logits_it_gave(arch: str) -> None:
    expected = torch.load(FIXTURES / "pre_decoder_config_logits.pt", weights_only=True)
    with pytest.warns(FutureWarning, match="layer_norm_eps"):  # saved under the former name
        model, tokenizer = load_checkpoint(FIXTURES / f"pre_decoder_config_{arch}.ckpt")
    assert tokenizer is not None and tokenizer.spec == {"name": "byte"}
    with torch.no_grad():
        torch.testing.assert_close(model(expected["ids"]), expected[arch], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_pre_refactor_checkpoint_computes_what_transformers_computes(arch: str) -> None:
    ids = torch.load(FIXTURES / "pre_decoder_config_logits.pt", weights_only=True)["ids"]
    with pytest.warns(FutureWarning, match="layer_norm_eps"):
        model, _ = load_checkpoint(FIXTURES / f"pre_decoder_config_{arch}.ckpt")
    hf = to_hf(model)
    prompt = ids[:, :4]
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=1e-5)
        hf_text = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    # Greedy steps are far from ties here (top-2 logit gaps > 6e-3), so the text must agree.
    assert generate(model, [prompt[0].tolist()], 12, temperature=0.0)[0] == hf_text[0].tolist()


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
