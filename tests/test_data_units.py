"""File units (Parquet row groups, Arrow batches, text and JSON Lines ranges) read by workers."""

import json
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest
from bpe_helpers import real_encoding
from data_helpers import read_tokens, reference_split, words_text, write
from test_data_scale import interrupt_prepare, module, shard_bytes, write_jsonl, write_parquet

from llm_torch.corpus import textfiles
from llm_torch.corpus.boundaries import is_safe_boundary
from llm_torch.corpus.tables import TableGroup, group_texts, table_groups
from llm_torch.corpus.textfiles import JsonlRange, TextRange, jsonl_ranges, text_ranges
from llm_torch.data import DataError

DOCS = [words_text(80 + 29 * i, seed=i) for i in range(30)] + ["", "naïve café ☕ done\n"]


def write_arrow(path: Path, texts: list[str | None], batch_rows: int) -> Path:
    """An Arrow IPC stream file (the ``datasets`` cache format) of ``batch_rows``-row batches."""
    table = pa.table({"n": list(range(len(texts))), "text": texts})
    with pa.OSFile(str(path), "wb") as file, pa.ipc.new_stream(file, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return path


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every file unit read in this process (not those read in worker processes)."""
    reads: list[object] = []
    for kind in (TableGroup, TextRange, JsonlRange):

        def counted(unit, read=kind.texts):  # type: ignore[no-untyped-def]
            reads.append(unit)
            return read(unit)

        monkeypatch.setattr(kind, "texts", counted)
    return reads


@pytest.mark.parametrize("tokenizer", ["byte", "gpt2"])
def test_workers_read_the_groups_and_the_cache_equals_one_process_and_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: str
) -> None:
    for i in range(4):
        write_parquet(tmp_path / f"pq/{i}.parquet", DOCS[8 * i : 8 * i + 8], rows=3)
    write_jsonl(tmp_path / "js/docs.jsonl", DOCS)
    options = {"tokenizer": tokenizer, "shard_tokens": 900, "val_fraction": 0.3}
    reads = count_reads(monkeypatch)
    two = module(tmp_path / "pq", tmp_path / "two", num_proc=2, **options)
    two.prepare_data()
    # The parent read one group, the one holding the validation cut; the workers the other 11.
    assert len(reads) == 1
    meta = json.loads((two.cache_path / "meta.json").read_text())
    one = module(tmp_path / "pq", tmp_path / "one", num_proc=1, **options)
    one.prepare_data()
    assert len(reads) == 1 + 12  # one process reads every group itself
    reference = module(tmp_path / "js", tmp_path / "js-cache", num_proc=1, **options)
    reference.prepare_data()
    assert len(shard_bytes(two.cache_path)) > 4
    assert shard_bytes(two.cache_path) == shard_bytes(one.cache_path)
    assert shard_bytes(two.cache_path) == shard_bytes(reference.cache_path)
    reference_meta = json.loads((reference.cache_path / "meta.json").read_text())
    for key in ("train_tokens", "val_tokens", "train_bytes", "val_bytes", "split_point"):
        assert meta[key] == reference_meta[key]
    assert meta == json.loads((one.cache_path / "meta.json").read_text())


@pytest.mark.parametrize(("fraction", "tokenizer"), [(0.05, "byte"), (0.5, "char"), (0.97, "byte")])
def test_the_group_holding_the_cut_is_found_by_size(
    tmp_path: Path, fraction: float, tokenizer: str
) -> None:
    # The split point is a (document, character) pair: the same for Parquet and JSON Lines; a
    # char vocabulary is learned from the training groups' text (the accented document first).
    docs = DOCS[::-1] if tokenizer == "char" else DOCS
    for i in range(4):
        write_parquet(tmp_path / f"pq/{i}.parquet", docs[8 * i : 8 * i + 8], rows=3)
    write_jsonl(tmp_path / "js/docs.jsonl", docs)
    found = [
        module(tmp_path / folder, tmp_path / "cache", val_fraction=fraction, tokenizer=tokenizer)
        for folder in ("pq", "js")
    ]
    for data in found:
        data.prepare_data()
    metas = [json.loads((d.cache_path / "meta.json").read_text()) for d in found]
    assert metas[0]["split_point"] == metas[1]["split_point"]
    assert metas[0]["vocab_size"] == metas[1]["vocab_size"]
    assert shard_bytes(found[0].cache_path) == shard_bytes(found[1].cache_path)


def test_interrupted_parquet_prepare_resumes_without_rereading_earlier_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        write_parquet(tmp_path / f"src/{i}.parquet", DOCS[8 * i : 8 * i + 8], rows=2)
    options = {"shard_tokens": 500, "num_proc": 1, "val_fraction": 0.2}
    reference = module(tmp_path / "src", tmp_path / "reference", **options)
    reference.prepare_data()
    data = module(tmp_path / "src", tmp_path / "cache", **options)
    encode_text = interrupt_prepare(data, monkeypatch, after_chars=40_000)
    partial = tmp_path / "cache" / f".{data.cache_path.name}.partial"
    progress = json.loads((partial / "progress.json").read_text())
    assert len(progress["shards"]["train"]) >= 10 and progress["offset"] > 0
    monkeypatch.setattr(data.tokenizer, "encode_to_numpy", encode_text)
    reads = count_reads(monkeypatch)
    data.prepare_data()
    # Groups before the resume point were not read again; the resumed one and later ones were,
    # and the parent read the one holding the validation cut.
    groups = 16
    assert progress["item"] > 5 and len(reads) <= groups - progress["item"] + 2
    assert shard_bytes(data.cache_path) == shard_bytes(reference.cache_path)
    meta = json.loads((data.cache_path / "meta.json").read_text())
    assert meta == json.loads((reference.cache_path / "meta.json").read_text())  # bytes too


def test_arrow_record_batches_are_groups_read_from_their_offsets(tmp_path: Path) -> None:
    texts: list[str | None] = [f"document {i} " * (i + 1) for i in range(10)]
    texts[4] = None  # a null is an empty document
    path = write_arrow(tmp_path / "data.arrow", texts, batch_rows=3)
    groups = table_groups(path)
    assert [group.rows for group in groups] == [3, 3, 3, 1]
    assert len({group.offset for group in groups}) == 4
    for group in reversed(groups):  # any order: each is read from its own offset
        start = 3 * group.number
        assert group_texts(group) == [t or "" for t in texts[start : start + 3]]
    with pytest.raises(DataError, match=r"data\.arrow has no column 'body' \(its columns: n, text"):
        table_groups(path, "body")
    path.write_bytes(path.read_bytes()[:-40])  # truncated in its last batch
    with pytest.raises(DataError, match=r"Cannot read the table file .*data\.arrow.*Fix"):
        table_groups(path)


TEXT = "\ufeff" + "".join(
    words_text(60, seed=i) + f"naïve café ☕ {i}😀\n" + ("7" * 90 if i == 5 else "")
    for i in range(40)
)


def test_text_ranges_start_at_safe_boundaries_and_encode_like_the_whole_file(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "a.txt", TEXT)
    ranges = text_ranges(path, range_bytes=300)
    size = path.stat().st_size
    assert len(ranges) > 20 and [r.last for r in ranges] == [False] * (len(ranges) - 1) + [True]
    assert ranges[0].start == 0 and ranges[-1].stop == size
    assert all(a.stop == b.start for a, b in pairwise(ranges))
    text = TEXT.removeprefix("\ufeff")
    parts = [r.texts()[0] for r in ranges]
    assert "".join(parts) == text
    for r in ranges[1:]:
        chars = r.chars_before()
        assert text[chars:].startswith(parts[ranges.index(r)])  # chars_before, BOM left out
        assert is_safe_boundary(text, chars)
    encoding = real_encoding("r50k_base")
    ids = [token for part in parts for token in encoding.encode_ordinary(part)]
    assert ids == encoding.encode_ordinary(text)
    # Each cut is the first safe boundary after a multiple of range_bytes: none inside a run
    # of digits (bytes 400-2400), so the cuts at 500-2000 all fall at 2400 and merge.
    digits = write(tmp_path, "d.txt", "x " * 200 + "7" * 2000 + " y" * 200)
    merged = text_ranges(digits, range_bytes=500)
    assert [(r.start, r.stop) for r in merged] == [(0, 2400), (2400, 2502), (2502, 2800)]


def test_invalid_utf8_in_a_later_range_names_its_file_offset(tmp_path: Path) -> None:
    data = TEXT.encode()
    at = data.index(b" ", 2000)  # a Latin-1 byte between two ASCII ones
    path = write(tmp_path, "bad.txt", data[:at] + b"\xe9" + data[at:])
    ranges = text_ranges(path, range_bytes=300)
    holder = next(r for r in ranges if r.start <= at < r.stop)
    assert holder.start > 0
    with pytest.raises(DataError, match=rf"bad\.txt is not valid UTF-8: .* byte offset {at} "):
        holder.texts()


def test_jsonl_ranges_hold_whole_lines_and_errors_name_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    ranges = jsonl_ranges(path, range_bytes=700)
    assert len(ranges) > 10 and ranges[-1].stop == path.stat().st_size
    assert [text for r in ranges for text in r.texts()] == DOCS
    assert [r.measure()[1] for r in ranges] == [len(r.texts()) for r in ranges]
    lines = path.read_text().splitlines(keepends=True)
    lines[23] = '{"title": "no text"}\n'
    path.write_text("".join(lines))
    ranges = jsonl_ranges(path, range_bytes=700)
    holder = next(r for r in ranges if '"title"' in path.read_bytes()[r.start : r.stop].decode())
    assert holder.start > 0
    with pytest.raises(DataError, match=r'docs\.jsonl, line 24: no "text" string field'):
        holder.texts()


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_workers_read_text_and_jsonl_ranges_and_the_cache_is_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(textfiles, "RANGE_BYTES", 400)
    docs = [TEXT[i * 1500 : (i + 1) * 1500] for i in range(4)] if kind == "txt" else DOCS
    if kind == "txt":
        docs[0] = "\ufeff" + docs[0]
        for i, doc in enumerate(docs):
            write(tmp_path, f"src/{i}.txt", doc)
        docs[0] = docs[0].removeprefix("\ufeff")
    else:
        write_jsonl(tmp_path / "src/a.jsonl", docs[:20])
        write_jsonl(tmp_path / "src/b.jsonl", docs[20:])
    options = {"tokenizer": "gpt2", "shard_tokens": 300, "val_fraction": 0.35}
    reads = count_reads(monkeypatch)
    two = module(tmp_path / "src", tmp_path / "two", num_proc=2, **options)
    two.prepare_data()
    assert len(reads) == 1  # the parent read only the range holding the validation cut
    one = module(tmp_path / "src", tmp_path / "one", num_proc=1, **options)
    one.prepare_data()
    assert len(reads) > 10
    assert shard_bytes(two.cache_path) == shard_bytes(one.cache_path)
    meta = json.loads((two.cache_path / "meta.json").read_text())
    assert meta == json.loads((one.cache_path / "meta.json").read_text())
    encoding = real_encoding("r50k_base")
    train, val = reference_split(docs, meta["split_point"], encoding.encode_ordinary, 50256)
    assert read_tokens(two.cache_path, "train") == train
    assert read_tokens(two.cache_path, "val") == val
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(d.encode()) for d in docs)
