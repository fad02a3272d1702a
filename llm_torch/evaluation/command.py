"""``llm-torch evaluate``: lm-evaluation-harness tasks and perplexity of text files.

Like ``generate``, it needs no YAML: a checkpoint carries the model and its tokenizer. lm-eval
is imported only when ``--tasks`` is given, so ``--text_file`` works without the ``eval`` extra.
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llm_torch.engine.loading import add_model_options, load_model, place
from llm_torch.evaluation.scoring import perplexity


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-torch evaluate",
        description="Score a model on lm-evaluation-harness tasks, or its perplexity on text.",
    )
    add_model_options(parser)
    parser.add_argument(
        "--tasks",
        help="comma-separated lm-eval tasks: names (hellaswag, arc_easy), patterns (arc_*), "
        "task YAML files or folders of them",
    )
    parser.add_argument(
        "--include_path",
        action="append",
        default=[],
        help="folder of task YAMLs to add to lm-eval's index (repeatable)",
    )
    parser.add_argument(
        "--text_file",
        action="append",
        default=[],
        help="text file to report loss, perplexity and bits per byte on (repeatable)",
    )
    parser.add_argument(
        "--num_fewshot", type=int, default=None, help="few-shot examples per prompt"
    )
    parser.add_argument(
        "--limit", type=float, default=None, help="items per task (below 1: a fraction)"
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output", help="write the results to this JSON file")
    return parser


def evaluate_command(argv: list[str]) -> None:
    """Run ``llm-torch evaluate``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.tasks and not args.text_file:
        parser.error("give --tasks (lm-eval tasks) and/or --text_file (perplexity)")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        parser.error("--num_fewshot must be >= 0")
    if args.batch_size < 1:
        parser.error("--batch_size must be >= 1")
    texts = {}
    for name in args.text_file:
        if not Path(name).is_file():
            raise FileNotFoundError(f"--text_file {name!r} does not exist.")
        texts[name] = Path(name).read_text(encoding="utf-8")
    names: list[str] = [] if not args.tasks else [t for t in args.tasks.split(",") if t.strip()]
    tasks = _prepare_tasks([t.strip() for t in names], args) if names else None

    model, tokenizer = load_model(args.ckpt_path, args.hf_dir, args.tokenizer)
    model = place(model, args.device, args.precision)
    report: dict[str, Any] = {}
    if tasks is not None:
        report.update(_run_tasks(model, tokenizer, tasks, args))
    if texts:
        report["perplexity"] = {}
        for name, text in texts.items():
            result = perplexity(model, tokenizer, [text], batch_size=args.batch_size)
            report["perplexity"][name] = asdict(result)
            print(
                f"{name}: {result.tokens} tokens, {result.bytes} bytes | loss {result.loss:.4f} "
                f"| perplexity {result.perplexity:.3f} | bits per byte {result.bits_per_byte:.4f}"
            )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2, default=str) + "\n", "utf-8")
        print(f"Wrote {args.output}")


def _prepare_tasks(names: list[str], args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """Resolve and build the tasks before the model loads, so bad names fail fast."""
    try:
        from llm_torch.evaluation.tasks import load_tasks, task_manager
    except ImportError as err:
        raise ValueError(
            f"--tasks needs lm-evaluation-harness ({err}). Install it: pip install -e '.[eval]'"
        ) from None
    manager, resolved = task_manager(names, args.include_path)
    return manager, load_tasks(manager, resolved, args.num_fewshot)


def _run_tasks(
    model: Any, tokenizer: Any, tasks: tuple[Any, list[Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Evaluate with lm-eval, print its tables, and return what ``--output`` saves."""
    import lm_eval
    from lm_eval.utils import make_table

    from llm_torch.evaluation.lm import LLMTorchLM

    manager, built = tasks
    lm = LLMTorchLM(model=model, tokenizer=tokenizer, batch_size=args.batch_size, device=None)
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=built,
        num_fewshot=args.num_fewshot,
        limit=limit,
        task_manager=manager,
        log_samples=False,
    )
    assert results is not None  # None only on ranks other than 0; this is one process
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    keep = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "n-samples")
    return {key: results[key] for key in keep if key in results}
