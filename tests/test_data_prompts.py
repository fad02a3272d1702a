"""Prompt files for predict: plain lines or JSON Lines, with clear errors."""

from pathlib import Path

import pytest

from llm_torch.data import DataError
from llm_torch.data.prompts import read_prompts


def test_text_and_jsonl_prompt_files(tmp_path: Path) -> None:
    text = tmp_path / "p.txt"
    text.write_text("first\n\nthird\n", encoding="utf-8")
    assert read_prompts(text) == ["first", "", "third"]  # an empty line is an empty prompt
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a\\nb"}\n\n{"prompt": "ü"}\n', encoding="utf-8")
    assert read_prompts(jsonl) == ["a\nb", "ü"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bad.jsonl",
            '{"prompt": 1}\n',
            r'bad\.jsonl, line 1: expected a JSON object with a "prompt"',
        ),
        ("bad.jsonl", "not json\n", r"line 1: expected a JSON object"),
        ("empty.txt", "", r"holds no prompts"),
    ],
)
def test_bad_prompt_files_are_named(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_prompts(path)
    with pytest.raises(DataError, match=r"does not exist"):
        read_prompts(tmp_path / "missing.txt")
