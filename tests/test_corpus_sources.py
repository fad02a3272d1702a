"""Source strings to documents: files, folders, globs, JSON Lines, and their errors."""

from pathlib import Path

import pytest
from data_helpers import documents, write

from llm_torch.corpus import DataError
from llm_torch.corpus.sources import resolve_source
from llm_torch.corpus.textfiles import read_text_chunks


def test_file_folder_and_glob_sources(tmp_path: Path) -> None:
    write(tmp_path, "b.txt", "bee\n")
    write(tmp_path, "a.md", "# ay\n")
    write(tmp_path, "sub/c.txt", "sea\n")
    write(tmp_path, "sub/skip.csv", "x,y\n")
    write(tmp_path, ".hidden/d.txt", "hidden\n")
    assert documents(str(tmp_path / "b.txt")) == ["bee\n"]
    assert documents(str(tmp_path)) == ["# ay\n", "bee\n", "sea\n"]  # sorted by path, .csv skipped
    assert documents(str(tmp_path / "**" / "*.txt")) == ["bee\n", "sea\n"]


def test_jsonl_documents_and_bom(tmp_path: Path) -> None:
    write(tmp_path, "docs.jsonl", '{"text": "one"}\n\n{"text": "two\\nlines", "id": 2}\n')
    write(tmp_path, "bom.txt", "\ufeffstart")
    assert documents(str(tmp_path / "docs.jsonl")) == ["one", "two\nlines"]
    assert documents(str(tmp_path / "bom.txt")) == ["start"]


def test_streamed_chunks_decode_multibyte_text_split_across_reads(tmp_path: Path) -> None:
    text = "naïve café 漢字 😀 " * 50
    path = write(tmp_path, "u.txt", text)
    chunks = list(read_text_chunks(path, read_bytes=7))
    assert len(chunks) > 50 and "".join(chunks) == text


def test_fingerprint_follows_content_not_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "some text")
    first = resolve_source(str(path)).fingerprint
    path.write_text("some text", encoding="utf-8")  # rewritten, same content
    assert resolve_source(str(path)).fingerprint == first
    path.write_text("some text!", encoding="utf-8")
    assert resolve_source(str(path)).fingerprint != first


def test_missing_path_names_the_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing exists at .*nope\.txt.*Fix: correct the path"):
        resolve_source(str(tmp_path / "nope.txt"))


def test_glob_matching_nothing(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", "x")
    with pytest.raises(DataError, match=r"glob .* matches no \.txt/\.md/\.jsonl/\.parquet files"):
        resolve_source(str(tmp_path / "*.txt"))


def test_folder_without_text_files(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", "x")
    with pytest.raises(DataError, match=r"contains no \.txt/\.md/\.jsonl/\.parquet files"):
        resolve_source(str(tmp_path))


def test_invalid_utf8_names_file_and_byte_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.txt", b"caf\xe9 ok" + b"!" * 20)
    with pytest.raises(
        DataError, match=r"latin1\.txt is not valid UTF-8: .* byte offset 3 .*iconv"
    ):
        list(read_text_chunks(path, read_bytes=2))  # the bad byte arrives in the second read
    lines = write(tmp_path, "bad.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl is not valid UTF-8: .* byte offset 30"):
        documents(str(lines))


NO_TEXT = r'no "text" string field'


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"title": "x"}', NO_TEXT),
        ('{"text": 3}', NO_TEXT),
        ("[1, 2]", NO_TEXT),
        ("{text: x}", "not valid JSON"),
    ],
)
def test_jsonl_line_without_text_names_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = write(tmp_path, "docs.jsonl", '{"text": "ok"}\n\n' + line + "\n")
    with pytest.raises(DataError, match=rf"docs\.jsonl, line 3: {problem}.*Fix"):
        documents(str(path))
