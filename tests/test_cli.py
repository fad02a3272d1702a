"""The ``llm-torch`` CLI end to end: configs, logging, checkpoints, resume, bad input."""

import signal
from pathlib import Path

import pytest
import torch
from cli_helpers import (
    CONFIGS,
    event_tags,
    scalars,
    tiny_args,
    tiny_model_args,
    tokenizer_args,
    write_corpus,
)

from llm_torch.cli import cli as main
from llm_torch.engine.checkpoint import CheckpointError


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus.txt")


def _arch(config: Path) -> str:
    return "llama" if "llama" in config.read_text() else "gpt"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_parses_and_trains_a_few_steps(
    config: Path, tmp_path: Path, corpus: Path, tiny_bpe: Path
) -> None:
    args = ["fit", f"--config={config}", *tiny_args(tmp_path, corpus, steps=2)]
    args += tiny_model_args(_arch(config))
    if "batch:" in config.read_text():
        args.append("--batch.global_batch_size=4")  # 2 per micro-batch: accumulate 2
    args += tokenizer_args(config, tiny_bpe)
    cli = main(args)
    assert cli.trainer.global_step == 2
    assert cli.trainer.accumulate_grad_batches == (2 if "batch:" in config.read_text() else 1)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_fit_logs_scalars_and_text_samples_to_tensorboard(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    main(["fit", f"--config={config}", *tiny_args(tmp_path, corpus, steps=4)])
    scalar_tags, tensor_tags = event_tags(tmp_path / "logs")
    expected = {"train/loss", "val/loss", "val/ppl", "lr", "perf/tokens_per_sec", "perf/mfu"}
    assert expected <= scalar_tags
    assert "samples/text_summary" in tensor_tags
    losses = scalars(tmp_path / "logs", "train/loss")
    assert sorted(losses) == [0, 1, 2, 3]  # one value per step, log_every_n_steps=1
    val_loss = scalars(tmp_path / "logs", "val/loss")
    val_ppl = scalars(tmp_path / "logs", "val/ppl")
    step = max(val_loss)
    assert val_ppl[step] == pytest.approx(float(torch.tensor(val_loss[step]).exp()), rel=1e-5)


def test_validate_reports_the_val_loss_fit_ended_with(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = tiny_args(tmp_path, corpus, steps=4)
    fit = main(["fit", f"--config={config}", *args])
    fit_val_loss = float(fit.trainer.callback_metrics["val/loss"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    validate = main(["validate", f"--config={config}", *args, f"--ckpt_path={ckpt}"])
    assert float(validate.trainer.callback_metrics["val/loss"]) == pytest.approx(
        fit_val_loss, abs=1e-6
    )


def test_test_subcommand_evaluates_the_held_out_split(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = [*tiny_args(tmp_path, corpus, steps=2), "--trainer.limit_test_batches=2"]
    main(["fit", f"--config={config}", *args])
    ckpt = f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"
    validated = main(["validate", f"--config={config}", *args, ckpt]).trainer.callback_metrics
    tested = main(["test", f"--config={config}", *args, ckpt]).trainer.callback_metrics
    assert float(tested["test/loss"]) == pytest.approx(float(validated["val/loss"]), abs=1e-6)
    assert float(tested["test/ppl"]) == pytest.approx(float(validated["val/ppl"]), rel=1e-6)


def test_resumed_run_logs_the_same_losses_as_an_uninterrupted_one(
    tmp_path: Path, corpus: Path
) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"

    def run(folder: str, steps: int, *extra: str) -> dict[int, float]:
        root = tmp_path / folder
        args = tiny_args(root, corpus, steps=steps)
        # The schedule's length must not depend on where a run stops.
        args += ["--model.lr_decay_steps=8", "--model.warmup_steps=2"]
        args += ["--trainer.val_check_interval=100", "--trainer.limit_val_batches=0"]
        main(["fit", f"--config={config}", *args, *extra])
        return scalars(root / "logs", "train/loss")

    full = run("full", 8)
    first = run("resumed", 4)
    second = run("resumed", 8, "--ckpt_path=last")
    assert sorted(first) == [0, 1, 2, 3] and sorted(full) == list(range(8))
    resumed = {**first, **second}
    assert sorted(resumed) == list(range(8))
    assert [resumed[s] for s in range(8)] == [full[s] for s in range(8)]


@pytest.mark.slow  # two fits each: interrupted, then resumed
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interruption_leaves_a_resumable_last_checkpoint(
    signum: int, tmp_path: Path, corpus: Path
) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = [
        "fit",
        f"--config={config}",
        *tiny_args(tmp_path, corpus, steps=50),
        "--last_checkpoint.every_n_train_steps=1000",  # only the interruption writes last.ckpt
        "--trainer.val_check_interval=1000",
    ]
    interrupt = [
        "--trainer.callbacks+=cli_helpers.SendSignal",
        f"--trainer.callbacks.signum={int(signum)}",
        "--trainer.callbacks.at_step=3",
    ]
    if signum == signal.SIGTERM:
        with pytest.raises(SystemExit):
            main([*args, *interrupt])
    else:
        assert main([*args, *interrupt]).trainer.global_step == 3
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    resumed = main([*args, "--trainer.max_steps=5", "--ckpt_path=last"])
    assert resumed.trainer.global_step == 5


def test_checkpoint_carries_model_and_tokenizer(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    main(["fit", f"--config={config}", *tiny_args(tmp_path, corpus)])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    saved = checkpoint["llm_torch"]
    assert saved["model"]["arch"] == "gpt" and saved["model"]["n_layer"] == 4
    assert saved["tokenizer"]["name"] == "char"
    assert set(saved["tokenizer"]["chars"]) == set(corpus.read_text())


# --- Bad input ------------------------------------------------------------------------------------


def test_unknown_config_key_is_named(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    with pytest.raises(SystemExit):
        main(["fit", f"--config={config}", "--model.arch.init_args.n_layerz=3"])
    assert "n_layerz" in capsys.readouterr().err


def test_missing_checkpoint_file_is_a_clear_error(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt.*does not exist"):
        main(
            [
                "validate",
                f"--config={config}",
                *tiny_args(tmp_path, corpus),
                f"--ckpt_path={missing}",
            ]
        )


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = tiny_args(tmp_path, corpus)
    main(["fit", f"--config={config}", *args])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt' is truncated or corrupt"):
        main(["validate", f"--config={config}", *args, f"--ckpt_path={truncated}"])


def test_checkpoint_alone_defines_the_model_for_validate(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = tiny_args(tmp_path, corpus)
    main(["fit", f"--config={config}", *args, "--model.arch.init_args.n_layer=3"])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    # The YAML says 4 layers; the checkpoint's hyperparameters win, so its weights load.
    cli = main(["validate", f"--config={config}", *args, f"--ckpt_path={ckpt}"])
    assert cli.model.config.n_layer == 3


def test_checkpoint_for_another_vocabulary_is_refused(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = tiny_args(tmp_path, corpus)
    main(["fit", f"--config={config}", *args])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    vocab = len(set(corpus.read_text())) + 1
    with pytest.raises(
        ValueError, match=rf"different model \(vocab_size: checkpoint {vocab} vs config 257\)"
    ):
        main(
            [
                "validate",
                f"--config={config}",
                *args,
                "--data.tokenizer=byte",
                f"--ckpt_path={ckpt}",
            ]
        )


def test_data_block_size_beyond_the_model_is_refused(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = [*tiny_args(tmp_path, corpus), "--data.block_size=128"]
    with pytest.raises(ValueError, match=r"data.block_size \(128\) exceeds the model's block_size"):
        main(["fit", f"--config={config}", *args])


def test_global_batch_that_does_not_divide_is_refused(
    tmp_path: Path, corpus: Path, tiny_bpe: Path
) -> None:
    config = Path(__file__).parents[1] / "configs" / "gpt2.yaml"
    args = [*tiny_args(tmp_path, corpus), *tiny_model_args(), "--batch.global_batch_size=5"]
    args += tokenizer_args(config, tiny_bpe)
    with pytest.raises(ValueError, match=r"global_batch_size 5 is not a multiple of .* = 2"):
        main(["fit", f"--config={config}", *args])


def test_bf16_mixed_precision_trains(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = [*tiny_args(tmp_path, corpus, steps=2), "--trainer.precision=bf16-mixed"]
    cli = main(["fit", f"--config={config}", *args])
    assert cli.trainer.precision == "bf16-mixed"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    assert next(cli.model.parameters()).dtype == torch.float32  # autocast keeps fp32 weights


@pytest.mark.slow  # inductor compiles every block and the loss head
def test_compiled_blocks_train_and_keep_plain_checkpoint_keys(tmp_path: Path, corpus: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "shakespeare-char.yaml"
    args = [*tiny_args(tmp_path, corpus, steps=2), *tiny_model_args(), "--model.compile=true"]
    cli = main(["fit", f"--config={config}", *args])
    assert cli.model.model.lm_head.weight is cli.model.model.wte.weight  # tying survives compile
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [key for key in checkpoint["state_dict"] if "_orig_mod" in key]
    assert "model.blocks.0.attn.qkv.weight" in checkpoint["state_dict"]
