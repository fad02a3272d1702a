"""``--ckpt_path`` rebuilds the architecture a checkpoint was trained with, whatever the YAML says.

Fixtures: ``pre_decoder_config_*.ckpt`` (format 1) predate rotary GPT and QK-norm, so their saved
config lacks those fields; ``format2_llama.ckpt`` was written by ``fit`` with format 2 (every
field): a 1-layer Llama (2 heads, 1 key/value head, width 16, QK-norm, untied head, byte
tokenizer) trained 2 steps with ``configs/llama-nano.yaml`` and the tests' ``tiny_args``, saved
with the logits it gave for fixed ids (``format2_llama_logits.pt``).
"""

import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from cli_helpers import REPO, tiny_args, write_corpus

from llm_torch.architectures import GPTConfig, LlamaConfig
from llm_torch.cli import cli, main
from llm_torch.engine.checkpoint import CHECKPOINT_KEY, CheckpointError, load_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
QUICKSTART = REPO / "configs" / "shakespeare-char.yaml"  # a GPT with rotary positions, QK-norm
FORMAT2 = FIXTURES / "format2_llama.ckpt"

#: The Llama that format2_llama.ckpt holds, every field as its config resolved them.
FORMAT2_ARCH = LlamaConfig(
    vocab_size=257,
    block_size=16,
    n_layer=1,
    n_head=2,
    n_kv_head=1,
    n_embd=16,
    mlp_hidden=32,
    qk_norm=True,
    tie_embeddings=False,
)


def _validate(tmp_path: Path, config: Path, ckpt: Path) -> torch.nn.Module:
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = [*tiny_args(tmp_path, corpus), "--data.tokenizer=byte", f"--ckpt_path={ckpt}"]
    run = cli(["validate", f"--config={config}", *args])
    assert torch.isfinite(run.trainer.callback_metrics["val/loss"])
    return run.model


def test_a_format2_checkpoint_loads_as_the_model_it_saved() -> None:
    expected = torch.load(FIXTURES / "format2_llama_logits.pt", weights_only=True)
    model, tokenizer = load_checkpoint(FORMAT2)
    assert asdict(model.config) == asdict(FORMAT2_ARCH)
    assert (
        tokenizer is not None and tokenizer.decode(expected["ids"][0].tolist()) == "KING: Fair lo"
    )
    with torch.no_grad():
        torch.testing.assert_close(model(expected["ids"]), expected["logits"], rtol=0, atol=1e-5)


def test_a_gpt_yaml_validates_a_llama_checkpoint_as_the_llama(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"holds a LlamaConfig.*n_layer: checkpoint 1, config 4"):
        module = _validate(tmp_path, QUICKSTART, FORMAT2)
    assert asdict(module.config) == asdict(FORMAT2_ARCH)
    assert type(module.model).__name__ == "Llama"


def test_a_checkpoint_that_predates_a_field_gets_its_former_behaviour(tmp_path: Path) -> None:
    # The quickstart YAML asks for rotary positions and QK-norm; the checkpoint was trained
    # before either existed, with learned positions and no QK-norm, which their defaults give.
    with (
        pytest.warns(FutureWarning, match="layer_norm_eps"),
        pytest.warns(UserWarning, match=r"qk_norm: checkpoint False, config True.*positions"),
    ):
        module = _validate(tmp_path, QUICKSTART, FIXTURES / "pre_decoder_config_gpt.ckpt")
    assert asdict(module.config) == asdict(
        GPTConfig(
            vocab_size=257, block_size=16, n_layer=1, n_head=2, n_embd=16, bias=False,
            pad_vocab_size_multiple=8,
        )
    )  # fmt: skip
    assert module.model.wpe is not None and module.model.rope is None


@pytest.mark.slow
def test_resume_keeps_the_checkpoints_architecture(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = REPO / "configs" / "llama-nano.yaml"
    first = cli(
        ["fit", f"--config={config}", *tiny_args(tmp_path, corpus), "--data.tokenizer=byte"]
    )
    trained = asdict(first.model.config)
    args = [*tiny_args(tmp_path, corpus, steps=4), "--data.tokenizer=byte"]
    with pytest.warns(UserWarning, match=r"n_layer: checkpoint 4, config 2; n_embd"):
        resumed = cli(
            [
                "fit",
                f"--config={config}",
                *args,
                "--model.arch.init_args.n_layer=2",
                "--model.arch.init_args.n_embd=64",
                f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
            ]
        )
    assert asdict(resumed.model.config) == trained
    assert resumed.trainer.global_step == 4


# --- Bad input ------------------------------------------------------------------------------------


def _error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``llm-torch`` with ``args``; expect exit status 2 and one error line, returned."""
    monkeypatch.setattr(sys, "argv", ["llm-torch", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "generate"])
def test_an_unknown_checkpoint_format_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    checkpoint = torch.load(FORMAT2, weights_only=True)
    checkpoint[CHECKPOINT_KEY]["format"] = 99
    future = tmp_path / "future.ckpt"
    torch.save(checkpoint, future)
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(future)
    args = [f"--config={QUICKSTART}"] if command == "validate" else ["--prompt=KING"]
    message = _error(monkeypatch, capsys, command, *args, f"--ckpt_path={future}")
    assert "checkpoint format 99; this llm-torch reads formats 1 to 2" in message


def test_a_field_the_architecture_lacks_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "llama.yaml"
    config.write_text(
        "model:\n  arch:\n    class_path: llm_torch.architectures.LlamaConfig\n"
        "    init_args:\n      positions: rope\n",  # a GPT-only field
        encoding="utf-8",
    )
    message = _error(monkeypatch, capsys, "fit", f"--config={config}")
    assert '"model.arch"' in message and "'positions' is not accepted" in message


@pytest.mark.parametrize(
    ("class_path", "reason"),
    [
        ("torch.nn.Linear", "does not correspond to a subclass of DecoderConfig"),
        ("llm_torch.architectures.DecoderConfig", "is not a registered architecture config"),
    ],
)
def test_a_class_path_that_is_no_architecture_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    class_path: str,
    reason: str,
) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=60)
    args = [*tiny_args(tmp_path, corpus), "--data.tokenizer=byte"]
    message = _error(monkeypatch, capsys, "fit", *args, f"--model.arch.class_path={class_path}")
    assert "model.arch" in message and reason in message
