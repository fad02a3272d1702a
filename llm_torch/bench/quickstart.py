"""Time-to-loss of the CPU quickstart: ``llm-torch fit`` against nanoGPT's recipe as a plain loop.

    python -m llm_torch.bench.quickstart --source ../shared/data/tinyshakespeare.txt

Runs, alternating, each in a fresh process timed from its start to its exit (imports,
tokenization into a fresh cache, validation and checkpoints included):

(a) nanoGPT's CPU shakespeare-char recipe as a plain PyTorch loop: the same 4-layer, 128-wide,
    bias-free GPT on 12 x 64 windows, fused AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1),
    100 warmup steps and a cosine to 1e-4 over 2000 steps, clipping at 1.0, and an evaluation of
    20 batches of each split every 250 steps (nanoGPT's ``estimate_loss`` with ``eval_iters=20``);
(b) ``llm-torch fit --config configs/shakespeare-char.yaml``, as shipped (``--data.source``
    and the output folders aside).

Both report the validation loss of the same 20 fixed batches at their end. The table gives each
run, the medians, and the ratio of median wall times (b)/(a).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shakespeare-char.yaml"
_RESULT = "bench.quickstart result: "


def run_baseline(source: str, workdir: Path) -> float:
    """Path (a): nanoGPT's recipe by hand; returns the final validation loss."""
    import torch

    from llm_torch.architectures import GPT, GPTConfig
    from llm_torch.data import TextDataModule
    from llm_torch.engine.optim import OptimizerConfig, build_optimizer, warmup_cosine

    torch.manual_seed(1337)
    data = TextDataModule(
        source=source,
        tokenizer="char",
        block_size=64,
        batch_size=12,
        cache_dir=str(workdir / "cache"),
        progress=False,
    )
    data.prepare_data()
    data.setup("fit")
    vocab_size = data.tokenizer.vocab_size
    model = GPT(GPTConfig(vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False))
    optimizer = build_optimizer(model, OptimizerConfig(), 1e-3, 0.1, (0.9, 0.99), 1e-8, True)
    schedule = partial(warmup_cosine, warmup_steps=100, decay_steps=2000, min_ratio=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    train = iter(data.train_dataloader())
    val = [batch for _, batch in zip(range(20), data.val_dataloader(), strict=False)]

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            train_batches = [next(train) for _ in range(20)]  # nanoGPT also estimates train loss
            for inputs, targets in train_batches:
                model(inputs, targets=targets)
            loss = sum(float(model(x, targets=y)) for x, y in val) / len(val)
        model.train()
        return loss

    val_loss = float("nan")
    for step in range(1, 2001):
        inputs, targets = next(train)
        model(inputs, targets=targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 250 == 0:
            val_loss = evaluate()
    return val_loss


def run_fit(source: str, workdir: Path) -> float:
    """Path (b): the ``llm-torch fit`` command as shipped; returns the last ``val/loss``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from llm_torch.cli import cli

    cli(
        [
            "fit",
            f"--config={CONFIG}",
            f"--data.source={source}",
            f"--data.cache_dir={workdir / 'cache'}",
            f"--trainer.default_root_dir={workdir / 'logs'}",
            f"--checkpoint.dirpath={workdir / 'checkpoints'}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    (events,) = (workdir / "logs").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return accumulator.Scalars("val/loss")[-1].value


PATHS = {
    "a": ("(a) nanoGPT's recipe, plain loop", run_baseline),
    "b": ("(b) llm-torch fit", run_fit),
}


def _run_in_subprocess(source: str, path: str) -> tuple[float, float]:
    """One run in a fresh process: (wall seconds from process start, final val loss)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "llm_torch.bench.quickstart", "--source", source]
    result = subprocess.run([*command, f"--path={path}"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith(_RESULT)]
    if result.returncode or not lines:
        sys.exit(f"{PATHS[path][0]} failed:\n{result.stderr[-4000:]}")
    return seconds, float(lines[-1].removeprefix(_RESULT))


def main(argv: list[str] | None = None) -> None:
    """Run both paths ``--repeats`` times, alternating, and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--source", required=True, help="the training text (tinyshakespeare)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--path", choices=sorted(PATHS), help=argparse.SUPPRESS)
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if options.path:  # a child: one run, its loss as the last line
        with tempfile.TemporaryDirectory() as tmp:
            loss = PATHS[options.path][1](options.source, Path(tmp))
        print(_RESULT + json.dumps(loss), flush=True)
        return

    runs: dict[str, list[tuple[float, float]]] = {key: [] for key in PATHS}
    for _ in range(options.repeats):
        for key in PATHS:
            runs[key].append(_run_in_subprocess(options.source, key))
            print(f"{PATHS[key][0]}: {runs[key][-1][0]:.1f} s, val/loss {runs[key][-1][1]:.4f}")
    print("\n| Run | Val loss (median) | Wall s (median) | Runs (s, loss) |")
    print("| --- | --- | --- | --- |")
    medians = {}
    for key, (label, _) in PATHS.items():
        seconds = statistics.median(s for s, _ in runs[key])
        loss = statistics.median(v for _, v in runs[key])
        medians[key] = seconds
        each = ", ".join(f"{s:.0f} s {v:.3f}" for s, v in runs[key])
        print(f"| {label} | {loss:.3f} | {seconds:.1f} | {each} |")
    print(f"\nwall-time ratio (b)/(a): {medians['b'] / medians['a']:.2f}")


if __name__ == "__main__":
    main()
