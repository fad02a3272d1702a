"""``llm-torch predict`` output: generations written as JSON Lines."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


class JSONLPredictionWriter(BasePredictionWriter):
    """Write ``llm-torch predict`` generations as JSON Lines: prompt, completion, index.

    Each rank writes its own file when there are several (``name.rank1.jsonl``, ...), since ranks
    predict different prompts.

    Args:
        output: Path of the JSON Lines file.
    """

    def __init__(self, output: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.output = output

    def _path(self, trainer: Trainer) -> Path:
        path = Path(self.output)
        if trainer.world_size > 1:
            path = path.with_suffix(f".rank{trainer.global_rank}{path.suffix}")
        return path

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start an empty file, so reruns do not append to old results."""
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Append one line per prompt of the batch."""
        tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            raise ValueError("Writing predictions needs the data module's tokenizer.")
        with self._path(trainer).open("a", encoding="utf-8") as file:
            for index, prompt, new_ids in prediction:
                completion = tokenizer.decode(new_ids)
                record = {"index": index, "prompt": prompt, "completion": completion}
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
