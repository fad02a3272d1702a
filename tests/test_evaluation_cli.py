"""``llm-torch evaluate``: lm-eval tasks, perplexity of text files, and clear errors."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from evaluation_helpers import FIXTURE, save_checkpoint, tiny_model, tiny_tokenizer, write_task

pytest.importorskip("lm_eval")

from llm_torch.cli import main
from llm_torch.evaluation import LLMTorchLM
from llm_torch.evaluation.scoring import perplexity


@pytest.fixture
def checkpoint(tiny_bpe: Path, tmp_path: Path) -> Path:
    tokenizer = tiny_tokenizer(tiny_bpe)
    model = tiny_model("gpt", tokenizer.vocab_size, block_size=64)
    return save_checkpoint(model, tokenizer.spec, tmp_path / "tiny.ckpt")


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["llm-torch", "evaluate", *map(str, args)])
    main()


def _error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run, expect the one-line bad-input exit, and return the message."""
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, *args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "llm-torch: error" in line]
    assert len(lines) == 1
    return lines[0]


def test_evaluate_runs_a_local_task_and_reports_perplexity(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    one_thread: None,
) -> None:
    tasks = tmp_path / "tasks"
    write_task(tasks, "tiny_hellaswag", FIXTURE)
    short = tmp_path / "short.txt"
    short.write_text("The king speaks to the queen in the hall.", encoding="utf-8")
    long = tmp_path / "long.txt"
    long.write_text("Thou art my lord, and I'll say it's done. " * 20, encoding="utf-8")
    output = tmp_path / "out" / "results.json"
    _run(
        monkeypatch,
        f"--ckpt_path={checkpoint}",
        f"--tasks={tasks}",
        f"--text_file={short}",
        f"--text_file={long}",
        f"--output={output}",
        "--device=cpu",
        "--batch_size=5",
    )
    printed = capsys.readouterr().out
    assert "tiny_hellaswag" in printed and "acc_norm" in printed  # lm-eval's table
    report = json.loads(output.read_text())
    scores = report["results"]["tiny_hellaswag"]
    assert 0 <= scores["acc,none"] <= 1 and 0 <= scores["acc_norm,none"] <= 1

    # Perplexity of the short text, by hand: one forward pass after the end-of-text token.
    lm = LLMTorchLM(ckpt_path=str(checkpoint), device="cpu")
    tokenizer, model = lm.llm_tokenizer, lm.model
    text = short.read_text()
    ids = tokenizer.encode(text)
    inputs = torch.tensor([[tokenizer.eot_id, *ids[:-1]]])
    with torch.no_grad():
        loss = float(model(inputs, targets=torch.tensor([ids])))
    got = report["perplexity"][str(short)]
    assert got["tokens"] == len(ids) and got["bytes"] == len(text.encode())
    assert got["loss"] == pytest.approx(loss, abs=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(loss * len(ids) / len(text) / math.log(2))
    # The long one spans several windows: the rolling log-likelihood (HFLM-checked) over tokens.
    text = long.read_text()
    assert len(tokenizer.encode(text)) > 3 * model.config.block_size
    from lm_eval.api.instance import Instance

    request = Instance("loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    total = lm.loglikelihood_rolling([request])[0]
    got = report["perplexity"][str(long)]
    assert got["loss"] == pytest.approx(-total / len(tokenizer.encode(text)), abs=1e-5)
    assert perplexity(model, tokenizer, [text]).bits_per_byte == pytest.approx(
        got["bits_per_byte"], abs=1e-6
    )


def test_a_checkpoint_without_a_tokenizer_is_refused(
    tiny_bpe: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = tiny_model("gpt", tiny_tokenizer(tiny_bpe).vocab_size)
    ckpt = save_checkpoint(model, None, tmp_path / "no-tokenizer.ckpt")
    text = tmp_path / "t.txt"
    text.write_text("hello")
    message = _error(monkeypatch, capsys, f"--ckpt_path={ckpt}", f"--text_file={text}")
    assert "No tokenizer is known" in message and "--tokenizer" in message


def test_a_dataset_missing_offline_names_the_task_and_the_cache(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = tmp_path / "tasks"
    absent = "llm-torch-tests/absent-dataset"
    write_task(tasks, "absent_task", FIXTURE, dataset_path=absent, dataset_kwargs=None)
    message = _error(monkeypatch, capsys, f"--ckpt_path={checkpoint}", f"--tasks={tasks}")
    assert "'absent_task'" in message and "HF_DATASETS_CACHE" in message
    assert "HF_HOME" in message


def test_num_fewshot_on_a_task_without_examples_is_refused(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks = tmp_path / "tasks"
    yaml = write_task(tasks, "tiny_hellaswag", FIXTURE)
    args = [f"--ckpt_path={checkpoint}", f"--tasks={yaml}", "--num_fewshot=2"]
    message = _error(monkeypatch, capsys, *args)
    assert "task 'tiny_hellaswag' has no training, validation or few-shot split" in message


@pytest.mark.slow  # indexes lm-eval's thousands of built-in task YAMLs
def test_an_unknown_task_is_named_with_the_closest_ones(
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = _error(monkeypatch, capsys, f"--ckpt_path={checkpoint}", "--tasks=hellaswagg")
    assert "Unknown lm-eval task 'hellaswagg'" in message and "hellaswag" in message


def test_lm_eval_rolling_task_bits_per_byte_equals_text_perplexity(
    checkpoint: Path, tmp_path: Path, one_thread: None
) -> None:
    """A wikitext-style lm-eval task (loglikelihood_rolling) and --text_file agree."""
    import lm_eval

    from llm_torch.evaluation.tasks import load_tasks, task_manager

    texts = ["The king speaks to the queen in the hall. " * 9, "Thou art my lord.", "Fair foul."]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    folder = tmp_path / "tasks"
    write_task(
        folder,
        "tiny_wikitext",
        data,
        output_type="loglikelihood_rolling",
        doc_to_text="",
        doc_to_target="{{text}}",
        doc_to_choice=None,
        metric_list=[{"metric": "bits_per_byte"}, {"metric": "byte_perplexity"}],
    )
    manager, names = task_manager([str(folder)])
    lm = LLMTorchLM(ckpt_path=str(checkpoint), device="cpu", batch_size=4)
    tasks = load_tasks(manager, names)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, task_manager=manager, bootstrap_iters=0
    )
    assert results is not None
    theirs = results["results"]["tiny_wikitext"]["bits_per_byte,none"]
    ours = perplexity(lm.model, lm.llm_tokenizer, texts)
    assert len(lm.llm_tokenizer.encode(texts[0])) > 3 * lm.max_length  # several windows
    assert ours.bits_per_byte == pytest.approx(theirs, rel=1e-5)
    lowered = LLMTorchLM(ckpt_path=str(checkpoint), device="cpu", precision="bf16")
    assert lowered.model.wte.weight.dtype == torch.bfloat16
    rough = perplexity(lowered.model, lowered.llm_tokenizer, texts).bits_per_byte
    assert rough == pytest.approx(ours.bits_per_byte, rel=0.05)
