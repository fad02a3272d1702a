"""The GPU path's speed, guarded on CPU: the training graphs compile whole and compile once.

A graph break splits a compiled block into pieces with Python in between (slow, and no CUDA
graph), and a recompile costs seconds to minutes mid-run. Both are decided by dynamo, before
any backend, so the tests trace with ``aot_eager`` (forward and backward graphs, no codegen) and
need no GPU. Every recipe option and both architectures run under ``bf16-mixed`` autocast, as
GPU training does.
"""

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import REPO, tiny_args, write_corpus
from torch._dynamo.utils import counters

from llm_torch.architectures import GPTConfig, LlamaConfig
from llm_torch.architectures.registry import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "hellaswag_tiny.jsonl"

#: Architecture options of the speedrun recipe, each alone, and all of them together.
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "qk_norm": {"qk_norm": True},
    "relu2": {"mlp_activation": "relu2"},
    "softcap": {"logit_softcap": 15.0},
    "untied": {"tie_embeddings": False},
}
GPT_ONLY: dict[str, dict[str, Any]] = {
    "rope": {"positions": "rope"},
    "speedrun": {
        "positions": "rope",
        "qk_norm": True,
        "mlp_activation": "relu2",
        "logit_softcap": 15.0,
        "tie_embeddings": False,
        "bias": False,
    },
}
CASES = [
    *(pytest.param(GPTConfig, options, id=f"gpt-{name}") for name, options in OPTIONS.items()),
    *(pytest.param(GPTConfig, options, id=f"gpt-{name}") for name, options in GPT_ONLY.items()),
    *(pytest.param(LlamaConfig, options, id=f"llama-{name}") for name, options in OPTIONS.items()),
]

SHAPE = {"vocab_size": 96, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32}


@pytest.fixture
def fullgraph_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``torch.compile`` call traces with ``fullgraph=True``: a graph break raises."""
    torch._dynamo.reset()
    monkeypatch.setattr(
        torch, "compile", partial(torch.compile, backend="aot_eager", fullgraph=True)
    )


@pytest.mark.parametrize(("config_class", "options"), CASES)
def test_the_training_forward_compiles_without_graph_breaks(
    fullgraph_compile: None, config_class: type, options: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = build_model(config_class(**SHAPE, **options))
    model.compile_for_training()
    idx = torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["block_size"]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx, targets=idx.roll(-1, dims=1))
    loss.backward()
    assert torch.isfinite(loss)
    assert counters["stats"]["unique_graphs"] >= 2  # one block graph (shared) + the loss head


def test_a_graph_break_in_a_block_fails_the_check(fullgraph_compile: None) -> None:
    # The control: the check above is not vacuous.
    model = build_model(GPTConfig(**SHAPE))
    mlp = model.blocks[0].mlp
    forward = mlp.forward

    def broken(x: torch.Tensor) -> torch.Tensor:
        torch._dynamo.graph_break()
        return forward(x)

    mlp.forward = broken  # type: ignore[method-assign]
    model.compile_for_training()
    idx = torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["block_size"]))
    with pytest.raises(torch._dynamo.exc.Unsupported):
        model(idx, targets=idx)


def test_a_recompile_under_the_stance_fails(fullgraph_compile: None) -> None:
    # The control for the fit test: a new training shape needs a new graph, and is refused.
    model = build_model(GPTConfig(**SHAPE))
    model.compile_for_training()
    idx = torch.randint(0, SHAPE["vocab_size"], (2, SHAPE["block_size"]))
    model(idx, targets=idx).backward()
    torch.compiler.set_stance("fail_on_recompile")
    try:
        with pytest.raises(RuntimeError, match="recompil"):
            model(idx[:1, :7], targets=idx[:1, :7])
    finally:
        torch.compiler.set_stance("default")


@pytest.mark.slow
def test_a_compiled_fit_never_recompiles_its_training_graph(
    fullgraph_compile: None, tmp_path: Path, tiny_bpe: Path, one_thread: None
) -> None:
    from lightning.pytorch import Callback, Trainer

    from llm_torch.cli import cli

    class FailOnRecompile(Callback):
        """From the step after the first validation on, a training step may not compile."""

        def __init__(self) -> None:
            self.guarded = 0

        def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
            if trainer.global_step >= 3:
                torch.compiler.set_stance("fail_on_recompile")
                self.guarded += 1

        def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
            torch.compiler.set_stance("default")

    guard = FailOnRecompile()
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = [
        "fit",
        f"--config={REPO / 'configs' / 'shakespeare-char.yaml'}",
        *tiny_args(tmp_path, corpus, steps=8),
        "--trainer.val_check_interval=2",
        "--trainer.precision=bf16-mixed",
        "--model.compile=true",
        "--model.arch.init_args.block_size=64",
        f"--data.tokenizer=tiktoken:{tiny_bpe}",
        f"--eval.tasks=[{FIXTURE}]",
        "--eval.batch_size=5",
        "--eval.every_n_validations=1",
    ]
    try:
        run = cli(args, trainer_defaults={"callbacks": [guard]})
    finally:
        torch.compiler.set_stance("default")
    # Validations (each with a text sample and an eval) at steps 2, 4, 6 and 8; the training
    # steps between them all ran the graphs compiled before the first one.
    assert run.trainer.global_step == 8 and guard.guarded == 5
    assert counters["stats"]["unique_graphs"] > 0
