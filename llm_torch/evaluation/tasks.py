"""lm-evaluation-harness tasks by name, with bad input turned into one clear message.

lm-eval reports an unknown task as a ``KeyError`` and a dataset missing offline as a
``ConnectionError`` deep inside ``datasets``; ``--num_fewshot`` on a task without a split to
draw examples from silently takes them from the test set. Each of these becomes a ``ValueError``
here that names the task and the fix, which ``llm-torch`` prints as one line.
"""

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.api.group import Group
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager


def _is_path(item: str) -> bool:
    return Path(item).is_dir() or (item.endswith((".yaml", ".yml")) and Path(item).is_file())


def task_manager(
    tasks: Sequence[str], include_paths: Sequence[str] = (), include_defaults: bool | None = None
) -> tuple[TaskManager, list[str]]:
    """lm-eval's task index, and ``tasks`` resolved to names it knows.

    Args:
        tasks: Task, group or tag names, glob patterns (``arc_*``), task YAML files, or folders
            of task YAMLs (each folder stands for every task defined in it).
        include_paths: More folders of task YAMLs to index (lm-eval's include path).
        include_defaults: Index lm-eval's built-in tasks too. ``None``: only when some task is
            named rather than given as a file or folder (indexing thousands of YAMLs takes
            seconds to tens of seconds).

    Raises:
        ValueError: An unknown name (with the closest known ones) or a folder without tasks.
    """
    if include_defaults is None:
        include_defaults = not all(_is_path(item) for item in tasks)
    folders = [item for item in tasks if Path(item).is_dir()]
    manager = TaskManager(
        include_path=[*include_paths, *folders] or None, include_defaults=include_defaults
    )
    names: list[str] = []
    for item in tasks:
        if item in folders:
            found = TaskManager(include_path=item, include_defaults=False).all_subtasks
            if not found:
                raise ValueError(f"--tasks folder {item!r} defines no lm-eval task (no task YAML).")
            names += found
        elif item.endswith((".yaml", ".yml")) and Path(item).is_file():
            names.append(item)
        elif any(char in item for char in "*?["):
            matched = manager.match_tasks([item])
            if not matched:
                raise ValueError(f"No lm-eval task matches the pattern {item!r}.")
            names += matched
        elif item in manager.all_tasks:
            names.append(item)
        else:
            close = difflib.get_close_matches(item, manager.all_tasks, n=5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"Unknown lm-eval task {item!r}.{hint} `lm-eval ls tasks` lists them; a folder "
                "of your own task YAMLs goes in --tasks or --include_path."
            )
    return manager, list(dict.fromkeys(names))


def _datasets_cache() -> str:
    """Where ``datasets`` looks for downloaded datasets here."""
    try:
        import datasets

        return str(datasets.config.HF_DATASETS_CACHE)
    except ImportError:  # pragma: no cover - lm-eval depends on datasets
        return os.environ.get("HF_DATASETS_CACHE", "~/.cache/huggingface/datasets")


def _has_fewshot_source(task: Task) -> bool:
    """Whether the task has examples for few-shot prompts other than its test set."""
    config: Any = task.config
    fewshot = config.fewshot_config
    samples = (
        fewshot.get("samples") if isinstance(fewshot, dict) else getattr(fewshot, "samples", None)
    )
    return bool(
        task.has_training_docs()
        or task.has_validation_docs()
        or config.fewshot_split
        or samples is not None
    )


def load_tasks(
    manager: TaskManager, names: Sequence[str], num_fewshot: int | None = None
) -> list[Task | Group]:
    """Build each task (loading its dataset) and check it can run as asked.

    Returns:
        Tasks and groups, ready for ``lm_eval.simple_evaluate(tasks=...)``.

    Raises:
        ValueError: A dataset that cannot be loaded (offline and not cached, or missing), or
            ``num_fewshot > 0`` for a task with no examples to draw from.
    """
    built: list[Task | Group] = []
    for name in names:
        try:
            loaded = manager.load([name])
        except OSError as err:
            raise ValueError(
                f"Task {name!r} cannot load its dataset ({type(err).__name__}: {str(err)[:300]}). "
                "lm-eval reads datasets from the Hugging Face cache "
                f"(HF_DATASETS_CACHE={_datasets_cache()}, under HF_HOME by default) and downloads "
                "what is missing; offline (HF_DATASETS_OFFLINE=1 or HF_HUB_OFFLINE=1) the "
                "dataset must be there already. Run once with network access, or point "
                "HF_DATASETS_CACHE / HF_HOME at a cache that has it."
            ) from err
        for task in loaded["tasks"].values():
            explicit_zero = task.get_config("num_fewshot") == 0  # lm-eval keeps a configured 0
            if num_fewshot and not explicit_zero and not _has_fewshot_source(task):
                raise ValueError(
                    f"--num_fewshot {num_fewshot}: task {task.task_name!r} has no training, "
                    "validation or few-shot split to draw examples from (only the split it is "
                    "scored on). Run it zero-shot (drop --num_fewshot), or give the task a "
                    "fewshot_split."
                )
        group = loaded["groups"].get(name)
        built += [group] if group is not None else list(loaded["tasks"].values())
    return built
