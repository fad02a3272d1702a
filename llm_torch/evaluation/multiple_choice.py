"""Multiple-choice accuracy during training (HellaSwag and the like), as build-nanogpt logs it.

Every N validations, each item's endings are scored by the summed log-likelihood of the ending
after the context: ``acc`` picks the most likely ending, ``acc_norm`` the most likely per
character (lm-eval's normalisation, which stops short endings from winning by being short). The
tokens and the scoring are those of ``llm-torch evaluate`` (:mod:`llm_torch.evaluation.scoring`),
so the logged accuracy equals what it reports for the same items.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from llm_torch.architectures.base import DecoderLM
from llm_torch.engine.module import CausalLMModule
from llm_torch.evaluation.scoring import Request, encode_pair, score_batch
from llm_torch.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One multiple-choice question: the continuations are ``delimiter + choice``."""

    context: str
    choices: tuple[str, ...]
    label: int
    delimiter: str = " "


def read_hellaswag_jsonl(path: str | Path) -> list[Item]:
    """HellaSwag-format items from JSON Lines: ``ctx`` (or ``context``), ``endings``, ``label``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A line that is not such an item, named by its line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Multiple-choice file {str(path)!r} does not exist.")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            context = row["ctx"] if "ctx" in row else row["context"]
            endings = tuple(str(ending) for ending in row["endings"])
            label = int(row["label"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path}:{number} is not a HellaSwag-format item ({type(err).__name__}: {err}); "
                'each line needs {"ctx": str, "endings": [str, ...], "label": int}.'
            ) from None
        if not 0 <= label < len(endings):
            raise ValueError(f"{path}:{number}: label {label} is not an index of its endings.")
        items.append(Item(str(context), endings, label))
    if not items:
        raise ValueError(f"Multiple-choice file {str(path)!r} has no items.")
    return items


def lm_eval_items(
    name: str, include_path: Sequence[str] = (), limit: int | None = None
) -> list[Item]:
    """Zero-shot items of an lm-eval ``multiple_choice`` task, with lm-eval's own prompts.

    Raises:
        ValueError: lm-eval is not installed, an unknown task or a missing dataset (see
            :mod:`llm_torch.evaluation.tasks`), or a task that is not multiple choice.
    """
    try:
        from llm_torch.evaluation.tasks import load_tasks, task_manager
    except ImportError as err:
        raise ValueError(
            f"--eval.tasks {name!r} is an lm-eval task, which needs lm-evaluation-harness "
            f"({err}): pip install -e '.[eval]'. A HellaSwag-format .jsonl file needs nothing."
        ) from None
    manager, names = task_manager([name], include_path)
    items = []
    for task in load_tasks(manager, names):
        tasks = [task] if not hasattr(task, "get_all_tasks") else task.get_all_tasks()
        for leaf in tasks:
            if leaf.OUTPUT_TYPE != "multiple_choice":
                raise ValueError(
                    f"--eval.tasks {name!r}: task {leaf.task_name!r} is {leaf.OUTPUT_TYPE}, not "
                    "multiple_choice. Run it with `llm-torch evaluate` instead."
                )
            leaf.set_config(key="num_fewshot", value=0)
            leaf.build_all_requests(limit=limit)
            by_doc: dict[int, list[tuple[str, str]]] = {}
            docs = {}
            for instance in leaf.instances:
                by_doc.setdefault(instance.doc_id, []).append(instance.arguments)
                docs[instance.doc_id] = instance.doc
            for doc_id, arguments in sorted(by_doc.items()):
                doc = docs[doc_id]
                choices = [str(choice) for choice in leaf.doc_to_choice(doc)]
                gold = leaf.doc_to_target(doc)
                contexts = {context for context, _ in arguments}
                if len(contexts) != 1 or isinstance(gold, list) or len(arguments) != len(choices):
                    raise ValueError(
                        f"--eval.tasks {name!r}: task {leaf.task_name!r} has several contexts or "
                        "answers per item; run it with `llm-torch evaluate` instead."
                    )
                label = choices.index(gold) if isinstance(gold, str) else int(gold)
                delimiter = str(leaf.config.target_delimiter)
                items.append(Item(contexts.pop(), tuple(choices), label, delimiter))
    return items


def score_items(
    model: DecoderLM,
    tokenizer: Tokenizer,
    items: Sequence[Item],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """This rank's share of correct answers: a device tensor ``[acc, acc_norm, items]``.

    Rank ``r`` scores items ``r, r + world_size, ...``. Every rank runs the same number of
    forward passes (shares are padded with a repeated request whose score is dropped), which
    sharded (FSDP) models need: each forward pass gathers weights from all ranks.
    """
    shares = [items[r::world_size] for r in range(world_size)]
    longest = max(sum(len(item.choices) for item in share) for share in shares)
    mine = shares[rank]
    requests: list[Request] = [
        encode_pair(tokenizer, item.context, item.delimiter + choice)
        for item in mine
        for choice in item.choices
    ]
    real = len(requests)
    requests += [requests[0] if requests else _dummy(tokenizer)] * (longest - real)
    order = sorted(range(len(requests)), key=lambda i: -sum(map(len, requests[i])))
    scores = []
    for start in range(0, len(order), batch_size):
        scores.append(
            score_batch(model, [requests[i] for i in order[start : start + batch_size]])[0]
        )
    device = next(model.parameters()).device
    if not real:
        return torch.zeros(3, device=device)
    values = torch.empty(len(requests), device=device)
    values[torch.tensor(order, device=device)] = torch.cat(scores)
    lls = values[:real].tolist()
    acc = acc_norm = 0
    start = 0
    for item in mine:
        choice_lls = lls[start : start + len(item.choices)]
        start += len(item.choices)
        normed = [ll / len(choice) for ll, choice in zip(choice_lls, item.choices, strict=True)]
        acc += _first_argmax(choice_lls) == item.label
        acc_norm += _first_argmax(normed) == item.label
    return torch.tensor([acc, acc_norm, len(mine)], dtype=torch.float32, device=device)


def _dummy(tokenizer: Tokenizer) -> Request:
    return [tokenizer.eot_id], [tokenizer.eot_id]


def _first_argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first on ties (as ``numpy.argmax``)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


class MultipleChoiceEval(Callback):
    """Log multiple-choice accuracy (``eval/<task>/acc``, ``eval/<task>/acc_norm``) while training.

    Runs after every ``every_n_validations``-th validation, never during training steps, so it
    adds no per-step synchronisation. Each rank scores its share of the items and the counts are
    summed over ranks (one all-reduce per task).

    Args:
        tasks: Each a HellaSwag-format ``.jsonl`` file (``ctx``, ``endings``, ``label``; logged
            under the file's stem) or an lm-eval ``multiple_choice`` task name (needs the
            ``eval`` extra and the dataset in the Hugging Face cache). Empty: off.
        every_n_validations: Evaluate after every N-th validation.
        limit: Score at most this many items per task (the first ones).
        batch_size: Continuations per forward pass.
        include_path: Folders of lm-eval task YAMLs, for tasks of your own.
    """

    def __init__(
        self,
        tasks: list[str] | None = None,
        every_n_validations: int = 1,
        limit: int | None = None,
        batch_size: int = 32,
        include_path: list[str] | None = None,
    ) -> None:
        if every_n_validations < 1:
            raise ValueError(f"eval.every_n_validations must be >= 1, got {every_n_validations}.")
        if batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, got {batch_size}.")
        if limit is not None and limit < 1:
            raise ValueError(f"eval.limit must be >= 1 item (or null: all), got {limit}.")
        self.tasks = list(tasks or [])
        self.every_n_validations = every_n_validations
        self.limit = limit
        self.batch_size = batch_size
        self.include_path = list(include_path or [])
        self._items: dict[str, list[Item]] | None = None
        self._validations = 0
        #: The last results, ``{"eval/<task>/acc": ..., ...}`` (the same on every rank).
        self.results: dict[str, float] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Read the items once, before training starts, so bad input fails early."""
        if self._items is not None or not self.tasks:
            return
        items: dict[str, list[Item]] = {}
        for task in self.tasks:
            if task.endswith(".jsonl") or Path(task).is_file():
                items[Path(task).stem] = read_hellaswag_jsonl(task)[: self.limit]
            else:
                items[task] = lm_eval_items(task, self.include_path, self.limit)
        self._items = items

    def state_dict(self) -> dict[str, int]:
        """The validations counted so far: a resumed run evaluates when the original would."""
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Restore the validation count."""
        self._validations = int(state_dict.get("validations", 0))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every N-th validation: score the items on all ranks and log on rank zero."""
        if trainer.sanity_checking or not self._items:
            return
        self._validations += 1
        if self._validations % self.every_n_validations:
            return
        tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            log.warning("Multiple-choice evaluation skipped: the data module has no tokenizer.")
            return
        if not isinstance(pl_module, CausalLMModule) or pl_module.model is None:
            raise TypeError("MultipleChoiceEval expects a CausalLMModule with a built model.")
        model = pl_module.model
        was_training = model.training
        model.eval()
        counts = {}
        # Eager: evaluation shapes would recompile the training graph of compiled blocks.
        with torch.compiler.set_stance("force_eager"), trainer.precision_plugin.val_step_context():
            for task, items in self._items.items():
                counts[task] = score_items(
                    model,
                    tokenizer,
                    items,
                    self.batch_size,
                    trainer.global_rank,
                    trainer.world_size,
                )
        model.train(was_training)
        totals = trainer.strategy.reduce(torch.stack(list(counts.values())), reduce_op="sum")
        metrics = {}
        for task, (acc, acc_norm, total) in zip(counts, totals.tolist(), strict=True):
            metrics[f"eval/{task}/acc"] = acc / total
            metrics[f"eval/{task}/acc_norm"] = acc_norm / total
        self.results = metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
