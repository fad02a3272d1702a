"""Using trained models without YAML: checkpoint loading, generate, export, init_from."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import GPT2_ARCH, REPO, cli_command, tiny_args, tiny_model_args, write_corpus
from evaluation_helpers import save_checkpoint, tiny_model

from llm_torch.architectures import GPTConfig
from llm_torch.cli import cli, main
from llm_torch.data import DataError
from llm_torch.engine.checkpoint import CheckpointError, load_checkpoint
from llm_torch.engine.module import CausalLMModule
from llm_torch.generation import generate

transformers = pytest.importorskip("transformers")

CONFIG = REPO / "configs" / "shakespeare-char.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CausalLMModule, Path]:
    """A short quickstart-style run: (checkpoint, the trained module, corpus)."""
    root = tmp_path_factory.mktemp("trained")
    corpus = write_corpus(root / "corpus.txt")
    run = cli(["fit", f"--config={CONFIG}", *tiny_args(root, corpus, steps=3), *GPT2_ARCH])
    assert isinstance(run.model, CausalLMModule)
    return root / "checkpoints" / "last.ckpt", run.model, corpus


def test_checkpoint_rebuilds_the_trained_model_and_tokenizer(
    trained: tuple[Path, CausalLMModule, Path],
) -> None:
    ckpt, module, corpus = trained
    model, tokenizer = load_checkpoint(ckpt)
    assert tokenizer is not None and tokenizer.name == "char"
    assert set(tokenizer.spec["chars"]) == set(corpus.read_text())
    idx = torch.randint(0, tokenizer.vocab_size, (2, 16))
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(idx), module.model(idx), rtol=0, atol=0)


def test_truncated_foreign_and_mismatched_checkpoints_are_refused(
    trained: tuple[Path, CausalLMModule, Path], tmp_path: Path
) -> None:
    ckpt, _, _ = trained
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated, corrupt or not a PyTorch checkpoint"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match=r"not an llm-torch training checkpoint"):
        load_checkpoint(foreign)

    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["llm_torch"]["model"]["n_embd"] = 64
    mismatched = tmp_path / "mismatched.ckpt"
    torch.save(checkpoint, mismatched)
    with pytest.raises(CheckpointError, match=r"(?s)do not fit the model config.*size mismatch"):
        load_checkpoint(mismatched)

    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow  # three CLI subprocesses
def test_generate_prints_text_from_a_checkpoint(
    trained: tuple[Path, CausalLMModule, Path],
) -> None:
    ckpt, _, corpus = trained
    args = ["generate", f"--ckpt_path={ckpt}", "--prompt=KING:", "--max_new_tokens=12"]
    greedy = _run(*args, "--temperature=0")
    assert greedy.returncode == 0, greedy.stderr[-2000:]
    assert greedy.stdout.startswith("KING:")
    new_text = greedy.stdout[len("KING:") :].rstrip("\n")
    assert 0 < len(new_text) <= 12 + len("<|endoftext|>")
    assert set(new_text.replace("<|endoftext|>", "")) <= set(corpus.read_text())
    assert _run(*args, "--temperature=0").stdout == greedy.stdout  # greedy is deterministic
    # Longer than the model's 64-token context: the window slides instead of stopping.
    long = _run(*args[:-1], "--max_new_tokens=100", "--temperature=0")
    assert long.returncode == 0, long.stderr[-2000:]
    assert len(long.stdout.rstrip("\n")) > 64 or "<|endoftext|>" in long.stdout


@pytest.mark.slow  # a CLI subprocess
def test_export_loads_in_transformers_with_identical_logits(
    trained: tuple[Path, CausalLMModule, Path], tmp_path: Path
) -> None:
    ckpt, _, _ = trained
    result = _run("export", f"--ckpt_path={ckpt}", f"--out={tmp_path / 'hf'}")
    assert result.returncode == 0, result.stderr[-2000:]
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model, tokenizer = load_checkpoint(ckpt)
    assert tokenizer is not None and hf.config.eos_token_id == tokenizer.eot_id
    idx = torch.randint(0, tokenizer.vocab_size, (2, 32))
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)).abs().max().item() < 1e-4


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_a_model_without_a_tokenizer_is_refused_alike_by_generate_and_evaluate(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = save_checkpoint(tiny_model("gpt", 300), None, tmp_path / "no-tokenizer.ckpt")
    text = tmp_path / "t.txt"
    text.write_text("hello")
    extra = [f"--text_file={text}"] if command == "evaluate" else []
    monkeypatch.setattr(sys, "argv", ["llm-torch", command, f"--ckpt_path={ckpt}", *extra])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("llm-torch: error: No tokenizer is known for the checkpoint")
    assert "--tokenizer" in lines[0]


def _hf_gpt2(folder: Path, vocab_size: int = 257) -> "transformers.GPT2LMHeadModel":
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=32,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=256,
        eos_token_id=256,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def test_init_from_loads_pretrained_weights(tmp_path: Path) -> None:
    hf = _hf_gpt2(tmp_path / "hf")
    arch = GPTConfig(vocab_size=257, block_size=32, n_layer=1, n_head=2, n_embd=32)
    padded = GPTConfig(**{**arch.__dict__, "pad_vocab_size_multiple": 64})
    module = CausalLMModule(padded, init_from=str(tmp_path / "hf"))
    module.configure_model()
    idx = torch.randint(0, 257, (2, 32))
    with torch.no_grad():
        assert (module.model.eval()(idx) - hf(idx).logits).abs().max().item() < 1e-4

    other = CausalLMModule(
        GPTConfig(**{**arch.__dict__, "n_layer": 2}), init_from=str(tmp_path / "hf")
    )
    with pytest.raises(
        ValueError, match=r"holds a different model .*n_layer: checkpoint 1 vs config 2"
    ):
        other.configure_model()


def test_fit_continues_from_hugging_face_weights(tmp_path: Path) -> None:
    _hf_gpt2(tmp_path / "hf")
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = [
        *tiny_args(tmp_path, corpus, steps=2),
        *tiny_model_args(),
        *GPT2_ARCH,
        "--model.arch.init_args.bias=true",
        "--data.tokenizer=byte",
        f"--model.init_from={tmp_path / 'hf'}",
    ]
    run = cli(["fit", f"--config={CONFIG}", *args])
    assert run.trainer.global_step == 2
    assert torch.isfinite(run.trainer.callback_metrics["val/loss"])


def test_predict_writes_greedy_generations_as_jsonl(
    trained: tuple[Path, CausalLMModule, Path], tmp_path: Path
) -> None:
    ckpt, _, corpus = trained
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("KING:\nQUEEN: thou\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    args = [
        *tiny_args(tmp_path, corpus),
        f"--data.prompts_file={prompts}",
        f"--writer.output={output}",
        "--model.sampling.temperature=0",
        "--model.sampling.max_new_tokens=10",
    ]
    run = cli(["predict", f"--config={CONFIG}", *args, f"--ckpt_path={ckpt}"])
    # generate keeps its KV cache for the next batch; the end of predict frees it.
    assert not any("cache" in name for name, _ in run.model.named_buffers())
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [(row["index"], row["prompt"]) for row in rows] == [(0, "KING:"), (1, "QUEEN: thou")]
    model, tokenizer = load_checkpoint(ckpt)
    assert tokenizer is not None
    for row in rows:
        prompt = tokenizer.encode(row["prompt"])
        expected = generate(model, [prompt], 10, temperature=0, eos_id=tokenizer.eot_id)[0]
        assert row["completion"] == tokenizer.decode(expected[len(prompt) :])


def test_predict_without_prompts_is_a_clear_error(
    trained: tuple[Path, CausalLMModule, Path], tmp_path: Path
) -> None:
    ckpt, _, corpus = trained
    with pytest.raises(DataError, match=r"predict needs prompts: set data.prompts_file"):
        cli(["predict", f"--config={CONFIG}", *tiny_args(tmp_path, corpus), f"--ckpt_path={ckpt}"])
