"""Multiple-choice accuracy during training: equal to ``llm-torch evaluate``'s, on every rank."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import REPO, cli_command, scalars, tiny_args, tiny_model_args, write_corpus
from evaluation_helpers import FIXTURE, tiny_model, tiny_tokenizer, write_task

from llm_torch.evaluation.multiple_choice import (
    Item,
    MultipleChoiceEval,
    read_hellaswag_jsonl,
    score_items,
)

CONFIG = REPO / "configs" / "shakespeare-char.yaml"


def _lm_eval_scores(model: torch.nn.Module, tokenizer: object, tmp_path: Path) -> list[dict]:
    """Per-item results of lm-eval (``simple_evaluate`` with ``LLMTorchLM``) on the fixture."""
    pytest.importorskip("lm_eval")
    import lm_eval

    from llm_torch.evaluation import LLMTorchLM
    from llm_torch.evaluation.tasks import load_tasks, task_manager

    folder = tmp_path / "tasks"
    write_task(folder, "tiny_hellaswag", FIXTURE)
    manager, names = task_manager([str(folder)])
    lm = LLMTorchLM(model=model, tokenizer=tokenizer, device=None, batch_size=7)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=load_tasks(manager, names), task_manager=manager, log_samples=True
    )
    assert results is not None
    return sorted(results["samples"]["tiny_hellaswag"], key=lambda sample: sample["doc_id"])


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_callback_accuracy_equals_lm_eval_with_llm_torch_lm_item_by_item(
    arch: str, tiny_bpe: Path, tmp_path: Path, one_thread: None
) -> None:
    tokenizer = tiny_tokenizer(tiny_bpe)
    items = read_hellaswag_jsonl(FIXTURE)
    totals = torch.zeros(3)
    per_item: list[tuple[float, float]] = []
    for seed in range(3):  # a few random models, so that both right and wrong answers occur
        model = tiny_model(arch, tokenizer.vocab_size, block_size=64, seed=seed)
        samples = _lm_eval_scores(model, tokenizer, tmp_path / str(seed))
        for item, sample in zip(items, samples, strict=True):
            acc, acc_norm, count = score_items(model, tokenizer, [item], batch_size=3).tolist()
            assert count == 1
            assert (acc, acc_norm) == (sample["acc"], sample["acc_norm"])
            per_item.append((acc, acc_norm))
        totals += score_items(model, tokenizer, items, batch_size=5)
    assert totals[2] == 3 * len(items)
    assert totals[:2].tolist() == [sum(a for a, _ in per_item), sum(n for _, n in per_item)]
    assert {a for a, _ in per_item} == {0.0, 1.0}  # the comparison covered both outcomes


def test_ranks_share_the_items_and_run_the_same_number_of_forward_passes(
    tiny_bpe: Path, one_thread: None
) -> None:
    tokenizer = tiny_tokenizer(tiny_bpe)
    model = tiny_model("gpt", tokenizer.vocab_size, block_size=64)
    # Items with different numbers of endings: shares differ in size and must still align.
    extra = [
        Item("The queen", ("speaks.", "sleeps."), 0),
        Item("The lord", ("draws his sword.", "sings.", "runs."), 2),
    ]
    items = [*read_hellaswag_jsonl(FIXTURE), *extra]
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    whole = score_items(model, tokenizer, items, batch_size=4)
    shares = []
    for rank in range(3):
        calls.clear()
        shares.append(score_items(model, tokenizer, items, 4, rank=rank, world_size=3))
        shares[-1] = (shares[-1], len(calls))
    hook.remove()
    assert len({n_calls for _, n_calls in shares}) == 1
    assert sum(share for share, _ in shares).tolist() == whole.tolist()
    assert whole[2] == len(items)
    # More ranks than items: the idle ones still run their forward passes, and count nothing.
    lonely = [score_items(model, tokenizer, items[:1], 4, rank=r, world_size=2) for r in (0, 1)]
    assert lonely[1].tolist() == [0, 0, 0] and lonely[0][2] == 1


def test_bad_items_and_settings_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a", "endings": ["b", "c"], "label": 0}\n{"ctx": "a", "label": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not a HellaSwag-format item"):
        read_hellaswag_jsonl(bad)
    bad.write_text('{"ctx": "a", "endings": ["b", "c"], "label": 2}\n')
    with pytest.raises(ValueError, match=r"label 2 is not an index of its endings"):
        read_hellaswag_jsonl(bad)
    with pytest.raises(ValueError, match=r"every_n_validations must be >= 1"):
        MultipleChoiceEval([str(FIXTURE)], every_n_validations=0)


def _fit_args(tmp_path: Path, tiny_bpe: Path, steps: int) -> list[str]:
    corpus = write_corpus(tmp_path / "corpus.txt")
    return [
        "fit",
        f"--config={CONFIG}",
        *tiny_args(tmp_path, corpus, steps=steps),
        *tiny_model_args("gpt"),
        "--model.arch.init_args.block_size=64",
        f"--data.tokenizer=tiktoken:{tiny_bpe}",
        f"--eval.tasks=[{FIXTURE}]",
        "--eval.batch_size=5",
    ]


def _evaluate_checkpoint(ckpt: Path, tmp_path: Path) -> dict[str, float]:
    from llm_torch.engine.checkpoint import load_checkpoint

    model, tokenizer = load_checkpoint(ckpt)
    samples = _lm_eval_scores(model, tokenizer, tmp_path)
    return {
        "acc": sum(s["acc"] for s in samples) / len(samples),
        "acc_norm": sum(s["acc_norm"] for s in samples) / len(samples),
    }


@pytest.mark.slow  # a short fit plus lm-eval
def test_fit_logs_the_accuracy_llm_torch_evaluate_reports(
    tiny_bpe: Path, tmp_path: Path, one_thread: None
) -> None:
    from llm_torch.cli import cli

    args = _fit_args(tmp_path, tiny_bpe, steps=4)
    args += ["--trainer.val_check_interval=2", "--eval.every_n_validations=2"]
    run = cli(args)
    logged = {
        m: scalars(tmp_path / "logs", f"eval/hellaswag_tiny/{m}") for m in ("acc", "acc_norm")
    }
    assert sorted(logged["acc"]) == [4]  # validations at steps 2 and 4; every second one
    want = _evaluate_checkpoint(tmp_path / "checkpoints" / "last.ckpt", tmp_path)
    for metric in ("acc", "acc_norm"):
        assert logged[metric][4] == pytest.approx(want[metric])
    callback = next(c for c in run.trainer.callbacks if isinstance(c, MultipleChoiceEval))
    assert callback.results["eval/hellaswag_tiny/acc"] == pytest.approx(want["acc"])


FSDP = (
    '{"class_path": "llm_torch.engine.strategy.FSDPStrategy", '
    '"init_args": {"save_distributed_checkpoint": false}}'  # one last.ckpt file to evaluate
)


@pytest.mark.slow  # two processes
@pytest.mark.parametrize("strategy", ["ddp", FSDP], ids=["ddp", "fsdp2"])
def test_ranks_score_their_shares_and_log_the_sum(
    strategy: str, tiny_bpe: Path, tmp_path: Path
) -> None:
    args = [*_fit_args(tmp_path, tiny_bpe, steps=2), "--trainer.devices=2"]
    args.append(f"--trainer.strategy={strategy}")
    args.append("--model.optimizer.name=adamw")  # the config's Muon needs whole matrices
    launcher = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK"}
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    result = subprocess.run(
        [*cli_command(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    want = _evaluate_checkpoint(tmp_path / "checkpoints" / "last.ckpt", tmp_path)
    for metric in ("acc", "acc_norm"):
        logged = scalars(tmp_path / "logs", f"eval/hellaswag_tiny/{metric}")
        assert logged == {2: pytest.approx(want[metric])}
