"""Pretraining-scale data: Parquet and datasets sources, num_proc, shards, resume, llm.c shards."""

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from bpe_helpers import real_encoding
from data_helpers import documents, read_tokens, reference_split, words_text, write

from llm_torch.corpus.sources import resolve_source
from llm_torch.data import DataError, TextDataModule, encode, prepare
from llm_torch.data.windows import TrainBatches

DOCS = [words_text(120 + 37 * i, seed=i) for i in range(12)] + ["", "naïve café ☕ done\n"]


def module(source: Path | str, cache_dir: Path, **kwargs: object) -> TextDataModule:
    """A data module with small defaults and no progress bar.

    With ``tokenizer="gpt2"`` it skips the test when GPT-2's BPE file is not cached (the tests
    never download).
    """
    if kwargs.get("tokenizer") == "gpt2":
        real_encoding("r50k_base")
    options: dict = {"tokenizer": "byte", "block_size": 8, "batch_size": 4, "progress": False}
    return TextDataModule(source=str(source), cache_dir=str(cache_dir), **{**options, **kwargs})


def write_parquet(path: Path, texts: list[str], column: str = "text", rows: int = 3) -> Path:
    """A Parquet file with ``rows`` documents per row group and an extra id column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": list(range(len(texts))), column: texts})
    pq.write_table(table, path, row_group_size=rows)
    return path


def write_jsonl(path: Path, texts: list[str]) -> Path:
    return write(path.parent, path.name, "".join(json.dumps({"text": t}) + "\n" for t in texts))


def shard_bytes(folder: Path) -> dict[str, bytes]:
    """Every shard file of a cache folder by name (meta.json also names the source, so not it)."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}


def llmc_shard(path: Path, tokens: np.ndarray, magic: int = 20240520, version: int = 1) -> Path:
    """An llm.c shard written by hand (header: 256 int32, count in header[2]), like llm.c does."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (magic, version, len(tokens))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(header.tobytes())
        file.write(tokens.tobytes())
    return path


def interrupt_prepare(
    data: TextDataModule, monkeypatch: pytest.MonkeyPatch, after_chars: int
) -> Callable[[str], np.ndarray]:
    """Interrupts ``prepare_data`` as Ctrl-C would, once ``after_chars`` characters are encoded.

    Returns:
        The tokenizer's own encode function (it stays patched out).
    """
    encode_text = data.tokenizer.encode_to_numpy  # type: ignore[attr-defined]
    encoded: list[int] = []

    def crash_after(text: str) -> np.ndarray:
        if sum(encoded) > after_chars:
            raise KeyboardInterrupt
        encoded.append(len(text))
        return encode_text(text)

    monkeypatch.setattr(data.tokenizer, "encode_to_numpy", crash_after)
    with pytest.raises(KeyboardInterrupt):
        data.prepare_data()
    return encode_text


def test_parquet_and_jsonl_of_the_same_documents_give_identical_caches(tmp_path: Path) -> None:
    parquet = write_parquet(tmp_path / "pq" / "docs.parquet", DOCS)
    jsonl = write_jsonl(tmp_path / "js" / "docs.jsonl", DOCS)
    assert resolve_source(str(parquet)).texts().__next__() == DOCS[0]
    assert list(resolve_source(str(tmp_path / "pq")).texts()) == DOCS  # folders collect .parquet
    options = {"tokenizer": "gpt2", "shard_tokens": 700, "val_fraction": 0.2}
    from_parquet = module(parquet, tmp_path / "cache", **options)
    from_jsonl = module(jsonl, tmp_path / "cache", **options)
    for data in (from_parquet, from_jsonl):
        data.prepare_data()
    assert from_parquet.cache_path != from_jsonl.cache_path
    assert len(shard_bytes(from_parquet.cache_path)) > 3
    assert shard_bytes(from_parquet.cache_path) == shard_bytes(from_jsonl.cache_path)
    # And both are tiktoken's own encoding of each document part, end-of-text after each.
    meta = json.loads((from_parquet.cache_path / "meta.json").read_text())
    encoding = real_encoding("r50k_base")
    train, val = reference_split(DOCS, meta["split_point"], encoding.encode_ordinary, 50256)
    assert read_tokens(from_parquet.cache_path, "train") == train
    assert read_tokens(from_parquet.cache_path, "val") == val


def test_text_column_is_settable_and_a_missing_one_is_a_clear_error(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", DOCS[:3], column="content")
    assert list(resolve_source(str(path), text_column="content").texts()) == DOCS[:3]
    with pytest.raises(
        DataError, match=r"d\.parquet has no column 'text' \(its columns: id, content"
    ):
        module(path, tmp_path / "cache").prepare_data()
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_unreadable_file_halfway_through_a_glob_stops_before_writing(tmp_path: Path) -> None:
    for i in range(4):
        write_parquet(tmp_path / f"src/{i}.parquet", DOCS[3 * i : 3 * i + 3])
    write(tmp_path, "src/2.parquet", b"PAR1 this is not parquet PAR1")
    with pytest.raises(DataError, match=r"Cannot read the table file '.*2\.parquet'.*Fix"):
        module(tmp_path / "src/*.parquet", tmp_path / "cache").prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("tokenizer", ["byte", "gpt2"])
def test_num_proc_one_and_two_give_byte_identical_shards(tmp_path: Path, tokenizer: str) -> None:
    for i, text in enumerate(DOCS):
        write(tmp_path, f"src/{i:02d}.txt", text)
    options = {"tokenizer": tokenizer, "shard_tokens": 997}
    one = module(tmp_path / "src", tmp_path / "one", num_proc=1, **options)
    two = module(tmp_path / "src", tmp_path / "two", num_proc=2, **options)
    one.prepare_data()
    two.prepare_data()
    shards = shard_bytes(one.cache_path)
    assert len(shards) > 4 and shards == shard_bytes(two.cache_path)
    meta_one = json.loads((one.cache_path / "meta.json").read_text())
    meta_two = json.loads((two.cache_path / "meta.json").read_text())
    assert meta_one == meta_two
    # Every shard but each split's last holds exactly shard_tokens tokens.
    for part in ("train", "val"):
        counts = [count for _, count in meta_one["shards"][part]]
        assert all(count == 997 for count in counts[:-1]) and 0 < counts[-1] <= 997


def test_training_windows_cross_shard_boundaries_as_one_stream(tmp_path: Path) -> None:
    source = write(tmp_path, "a.txt", words_text(4_000))
    data = module(source, tmp_path / "cache", shard_tokens=101, block_size=32, batch_size=16)
    data.prepare_data()
    data.setup("fit")
    stream = np.array(read_tokens(data.cache_path, "train"))  # plain concatenation of the shards
    dataset = data.train_dataloader().dataset
    assert isinstance(dataset, TrainBatches)
    crossing = 0
    for k in range(30):
        x, y = dataset.batch(k)
        for row, start in enumerate(dataset.window_starts(k)):
            window = torch.from_numpy(stream[start : start + 33].astype(np.int64))
            assert torch.equal(x[row], window[:-1]) and torch.equal(y[row], window[1:])
            crossing += start // 101 != (start + 32) // 101
    assert crossing > 100  # most 33-token windows cross a 101-token shard's end
    val = np.array(read_tokens(data.cache_path, "val"))
    assert data.val_dataset is not None and len(data.val_dataset) == (len(val) - 1) // 32
    for index in range(len(data.val_dataset)):
        x, _ = data.val_dataset[index]
        assert x.tolist() == val[index * 32 : index * 32 + 32].tolist()


def test_interrupted_prepare_resumes_from_the_last_complete_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(8):
        write(tmp_path, f"src/{i}.txt", words_text(600, seed=i))
    monkeypatch.setattr(encode, "BATCH_CHARS", 500)  # many small batches
    options = {"shard_tokens": 1000, "num_proc": 1}
    reference = module(tmp_path / "src", tmp_path / "reference", **options)
    reference.prepare_data()
    data = module(tmp_path / "src", tmp_path / "cache", **options)
    encode_text = interrupt_prepare(data, monkeypatch, after_chars=12_000)
    partial = tmp_path / "cache" / f".{data.cache_path.name}.partial"
    done = sorted(partial.glob("train_*.bin"))
    assert len(done) >= 10 and not data.cache_path.exists()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done}
    encoded: list[int] = []

    def count(text: str) -> np.ndarray:
        encoded.append(len(text))
        return encode_text(text)

    monkeypatch.setattr(data.tokenizer, "encode_to_numpy", count)
    data.prepare_data()
    # The complete shards were kept, not rewritten, and their text was not tokenized again.
    after = {
        name: ((data.cache_path / name).stat().st_ino, (data.cache_path / name).stat().st_mtime_ns)
        for name in before
    }
    assert after == before
    # At most the text after the last complete shard, plus the piece it ends in, is re-encoded
    # (bytes: one token per character, plus one end-of-text per document).
    docs = documents(str(tmp_path / "src"))
    total = sum(map(len, docs))
    assert sum(encoded) <= total - 1000 * len(done) + max(map(len, docs)) + len(docs)
    assert shard_bytes(data.cache_path) == shard_bytes(reference.cache_path)
    meta = json.loads((data.cache_path / "meta.json").read_text())
    assert meta == json.loads((reference.cache_path / "meta.json").read_text())


def test_export_shards_round_trip_and_llmc_shards_are_read_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, "a.txt", words_text(5_000))
    data = module(source, tmp_path / "cache", tokenizer="gpt2", shard_tokens=512, block_size=16)
    data.prepare_data()
    written = data.export_shards(str(tmp_path / "out"), prefix="tiny")
    assert written[0].name == "tiny_val_000000.bin" and written[-1].name.startswith("tiny_train_")
    train_files = sorted((tmp_path / "out").glob("tiny_train_*.bin"))
    stream = []
    for path in train_files:  # llm.c's reader: header of 256 int32, then uint16 tokens
        raw = np.fromfile(path, dtype=np.int32, count=256)
        assert (raw[0], raw[1]) == (20240520, 1)
        tokens = np.fromfile(path, dtype=np.uint16, offset=1024)
        assert raw[2] == len(tokens)
        stream.append(tokens)
    stream_tokens = np.concatenate(stream)
    assert stream_tokens.tolist() == read_tokens(data.cache_path, "train")
    assert (
        stream_tokens.tolist()[:20]
        == real_encoding("r50k_base").encode_ordinary(words_text(5_000))[:20]
    )
    # Read back as a source: no tokenization, windows are contiguous slices of the stream.
    monkeypatch.setattr(encode, "encode_to_shards", None)
    shards = module(
        tmp_path / "out/tiny_train_*.bin",
        tmp_path / "cache2",
        tokenizer="gpt2",
        val_source=str(tmp_path / "out/tiny_val_*.bin"),
        block_size=64,
        batch_size=8,
    )
    shards.prepare_data()
    shards.setup("fit")
    dataset = shards.train_dataloader().dataset
    assert isinstance(dataset, TrainBatches) and len(dataset.tokens) == len(stream_tokens)
    for k in range(10):
        x, _ = dataset.batch(k)
        for row, start in enumerate(dataset.window_starts(k)):
            assert x[row].tolist() == stream_tokens[start : start + 64].tolist()


def test_llmc_uint32_shards_and_vocabulary_check(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = llmc_shard(
        tmp_path / "s/train_0.bin", rng.integers(0, 257, 300).astype(np.uint32), 20240801, 7
    )
    val = llmc_shard(
        tmp_path / "s/val_0.bin", rng.integers(0, 257, 100).astype(np.uint32), 20240801, 7
    )
    data = module(train, tmp_path / "cache", val_source=str(val))
    data.prepare_data()
    data.setup("fit")
    x, _ = data.val_dataset[0]  # type: ignore[index]
    assert x.tolist() == np.fromfile(val, dtype=np.uint32, offset=1024)[:8].tolist()
    big = llmc_shard(tmp_path / "t/train_0.bin", np.array([1, 2, 50256, 3] * 40, dtype=np.uint16))
    small_val = llmc_shard(tmp_path / "t/val_0.bin", np.arange(50, dtype=np.uint16))
    with pytest.raises(
        DataError,
        match=r"train_0\.bin holds token id 50256, outside the vocabulary of tokenizer 'byte' "
        r"\(257 ids\).*Fix",
    ):
        module(big, tmp_path / "cache", val_source=str(small_val)).prepare_data()


@pytest.mark.parametrize(
    ("magic", "version", "count", "problem"),
    [
        (20240521, 1, 10, r"magic 20240521 and version 1, not an llm\.c token shard"),
        (20240520, 7, 10, r"magic 20240520 and version 7, not an llm\.c token shard"),
        (20240520, 1, 11, r"header says 11 uint16 tokens \(1046 bytes .* holds 1044 bytes"),
    ],
)
def test_bad_llmc_shards_are_refused(
    tmp_path: Path, magic: int, version: int, count: int, problem: str
) -> None:
    good = llmc_shard(tmp_path / "s/a_0.bin", np.arange(200, dtype=np.uint16))
    bad = llmc_shard(tmp_path / "s/a_1.bin", np.arange(10, dtype=np.uint16), magic, version)
    if count != 10:
        raw = bytearray(bad.read_bytes())
        raw[8:12] = np.int32(count).tobytes()
        bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=problem + r".*Fix"):
        module(tmp_path / "s/a_*.bin", tmp_path / "cache", val_source=str(good))
    del good


def test_mixed_widths_no_val_source_and_too_short_shards(tmp_path: Path) -> None:
    narrow = llmc_shard(tmp_path / "m/a.bin", np.arange(100, dtype=np.uint16))
    llmc_shard(tmp_path / "m/b.bin", np.arange(100, dtype=np.uint32), 20240801, 7)
    with pytest.raises(DataError, match=r"mix token widths .*uint16.*uint32.*Fix"):
        module(tmp_path / "m/*.bin", tmp_path / "cache", val_source=str(narrow))
    with pytest.raises(DataError, match=r"val_source must name the validation shards too"):
        module(narrow, tmp_path / "cache")
    with pytest.raises(DataError, match=r"names token shards \(\.bin\), which hold token ids"):
        resolve_source(str(narrow))  # e.g. a tokenizer trainer asking for its text
    tiny = llmc_shard(tmp_path / "t/val.bin", np.arange(5, dtype=np.uint16))
    with pytest.raises(
        DataError, match=r"val split .* has 5 tokens, fewer than block_size \+ 1 = 9"
    ):
        module(narrow, tmp_path / "cache", val_source=str(tiny)).prepare_data()


def test_only_global_rank_zero_prepares_and_others_wait_with_a_timeout(tmp_path: Path) -> None:
    source = write(tmp_path, "a.txt", words_text(800))
    other = module(source, tmp_path / "cache", prepare_timeout=0.3)
    other.trainer = SimpleNamespace(global_rank=1, world_size=2)  # type: ignore[assignment]
    with pytest.raises(
        DataError, match=r"Global rank 1 waited 0 s for global rank 0 .*Fix: prepare it once"
    ):
        other.prepare_data()
    assert not (tmp_path / "cache").exists()  # rank 1 tokenized nothing
    first = module(source, tmp_path / "cache")
    first.trainer = SimpleNamespace(global_rank=0, world_size=2)  # type: ignore[assignment]
    first.prepare_data()
    other.prepare_data()  # finds rank 0's cache
    other.setup("fit")
    assert other.cache_path == first.cache_path


def test_hf_save_to_disk_folder_and_local_dataset_equal_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    dataset = datasets.Dataset.from_dict({"text": DOCS, "n": list(range(len(DOCS)))})
    dataset.save_to_disk(str(tmp_path / "saved"), max_shard_size="2KB")
    corpus = resolve_source(f"hf:{tmp_path / 'saved'}")
    assert len(corpus.files) > 1 and list(corpus.texts()) == DOCS
    jsonl = write_jsonl(tmp_path / "js/docs.jsonl", DOCS)
    from_hf = module(f"hf:{tmp_path / 'saved'}", tmp_path / "cache")
    from_jsonl = module(jsonl, tmp_path / "cache")
    for data in (from_hf, from_jsonl):
        data.prepare_data()
    assert shard_bytes(from_hf.cache_path) == shard_bytes(from_jsonl.cache_path)
    with pytest.raises(
        DataError, match=r"Cannot load the Hugging Face dataset .*no-such-dataset.*Fix"
    ):
        resolve_source(f"hf:{tmp_path / 'no-such-dataset'}")


def test_prepare_command_makes_the_cache_fit_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "a.txt", words_text(3_000))
    config = write(
        tmp_path,
        "fit.yaml",
        f"trainer:\n  max_steps: 1\ndata:\n  source: {source}\n  tokenizer: byte\n"
        f"  block_size: 8\n  batch_size: 2\n  cache_dir: {tmp_path / 'cache'}\n",
    )
    argv = ["--config", str(config), "--shard_tokens", "4000", "--num_proc", "2"]
    prepare.main([*argv, "--export", str(tmp_path / "llmc"), "--prefix", "x"])
    printed = capsys.readouterr().out.split()
    monkeypatch.setattr(encode, "encode_to_shards", None)  # fit must find it without tokenizing
    data = module(source, tmp_path / "cache", shard_tokens=4000)
    data.prepare_data()
    assert printed[0] == str(data.cache_path)
    exported = sorted((tmp_path / "llmc").glob("x_train_*.bin"))
    assert [str(p) for p in exported] == printed[2:]
    stream = np.concatenate([np.fromfile(p, dtype=np.uint16, offset=1024) for p in exported])
    assert stream.tolist() == read_tokens(data.cache_path, "train")
    assert stream[:100].tolist() == list(words_text(3_000).encode()[:100])


def test_streamed_hf_dataset_equals_jsonl_and_is_keyed_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    jsonl = write_jsonl(tmp_path / "local/docs.jsonl", DOCS)  # a local "hub" dataset folder
    corpus = resolve_source(f"hf:{tmp_path / 'local'}", streaming=True)
    assert corpus.files == () and list(corpus.texts()) == DOCS
    streamed = module(f"hf:{tmp_path / 'local'}", tmp_path / "cache", streaming=True)
    loaded = module(f"hf:{tmp_path / 'local'}", tmp_path / "cache")  # via the datasets cache
    direct = module(jsonl, tmp_path / "cache")
    cached = resolve_source(f"hf:{tmp_path / 'local'}").files
    assert cached and all(path.suffix == ".arrow" for path in cached)
    for data in (streamed, loaded, direct):
        data.prepare_data()
    assert shard_bytes(streamed.cache_path) == shard_bytes(direct.cache_path)
    assert shard_bytes(loaded.cache_path) == shard_bytes(direct.cache_path)
    other_split = module(
        f"hf:{tmp_path / 'local'}", tmp_path / "cache", streaming=True, hf_split="test"
    )
    assert other_split.cache_path != streamed.cache_path
    with pytest.raises(DataError, match=r"Cannot load the Hugging Face dataset .*split='test'"):
        other_split.prepare_data()
    with pytest.raises(DataError, match=r"no text column 'body' \(its columns: text\)"):
        list(resolve_source(f"hf:{tmp_path / 'local'}", "body", streaming=True).texts())


def test_resume_inside_validation_with_two_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [words_text(600, seed=i) for i in range(8)]
    for i, text in enumerate(texts):
        write(tmp_path, f"src/{i}.txt", text)
    monkeypatch.setattr(encode, "BATCH_CHARS", 500)
    options = {"shard_tokens": 700, "num_proc": 2, "val_fraction": 0.4}
    reference = module(tmp_path / "src", tmp_path / "reference", **options)
    reference.prepare_data()
    data = module(tmp_path / "src", tmp_path / "cache", **options)
    encode_text = data.tokenizer.encode_to_numpy  # type: ignore[attr-defined]

    def fail_on_document_6(text: str) -> np.ndarray:  # runs in the forked workers
        if text == texts[6]:
            raise RuntimeError("worker crashed")
        return encode_text(text)

    monkeypatch.setattr(data.tokenizer, "encode_to_numpy", fail_on_document_6)
    with pytest.raises(RuntimeError, match="worker crashed"):
        data.prepare_data()
    partial = tmp_path / "cache" / f".{data.cache_path.name}.partial"
    progress = json.loads((partial / "progress.json").read_text())
    assert progress["shards"]["val"], "the crash should come after some validation shards"
    monkeypatch.undo()
    monkeypatch.setattr(encode, "BATCH_CHARS", 500)
    data.prepare_data()
    assert shard_bytes(data.cache_path) == shard_bytes(reference.cache_path)
    assert json.loads((data.cache_path / "meta.json").read_text()) == json.loads(
        (reference.cache_path / "meta.json").read_text()
    )
