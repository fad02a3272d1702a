"""Prompt files for ``llm-torch predict``, and the ``Prompt`` triple the data module yields.

``Prompt`` lives here rather than beside generation so that the data pipeline imports no model
code: the data module reads and encodes prompts, the engine continues them.
"""

import json
from pathlib import Path

from llm_torch.corpus.errors import DataError

#: One prompt of ``llm-torch predict``: its index in the prompts file, its text and its token
#: ids. ``CausalLMModule.predict_step`` returns the same triple with the new ids in their place.
Prompt = tuple[int, str, list[int]]


def read_prompts(path: Path) -> list[str]:
    """Read prompts: JSON Lines (``.jsonl``, a ``"prompt"`` field each) or one per text line.

    Raises:
        DataError: A missing file, a malformed JSON line, or no prompts at all.
    """
    if not path.is_file():
        raise DataError(f"Prompts file {str(path)!r} does not exist. Fix: pass an existing file.")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        prompts = lines
    else:
        prompts = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                prompt = None
            if not isinstance(prompt, str):
                raise DataError(
                    f'{path}, line {number}: expected a JSON object with a "prompt" string.'
                )
            prompts.append(prompt)
    if not prompts:
        raise DataError(f"Prompts file {str(path)!r} holds no prompts.")
    return prompts
