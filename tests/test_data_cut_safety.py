"""Documents are cut only for cut-safe tokenizers; any other encodes each document whole.

The reference is Hugging Face ``tokenizers`` (or tiktoken) encoding each whole document, never
llm-torch's own pieces.
"""

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import tokenizers
from bpe_helpers import GPT2_PATTERN, tiny_encoding
from data_helpers import read_tokens, words_text, write
from test_data_scale import module, shard_bytes, write_jsonl
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from llm_torch.corpus import textfiles
from llm_torch.corpus.boundaries import is_safe_boundary
from llm_torch.corpus.sources import resolve_source
from llm_torch.data.cache import build_cache, cache_folder
from llm_torch.data.splits import MAX_PIECE_CHARS, CorpusSplit
from llm_torch.tokenizer import (
    ByteTokenizer,
    CharTokenizer,
    TiktokenFileTokenizer,
    TiktokenTokenizer,
    get_tokenizer,
)
from llm_torch.tokenizer.train import GPT4_PATTERN

SPECIALS = ["<unk>", "<s>", "</s>"]


def sentencepiece_style(style: str) -> tokenizers.Tokenizer:
    """A small SentencePiece-style tokenizer, trained offline on English-like lines.

    ``metaspace``: Unigram with a Metaspace pre-tokenizer that prepends "▁" to every encode call
    (a piece starting with a letter gains one). ``prepend``: byte-fallback BPE whose normalizer
    prepends "▁" and turns spaces into "▁", as Llama 2's and TinyLlama's ``tokenizer.json`` do
    (every piece gains one).
    """
    if style == "metaspace":
        tokenizer = tokenizers.Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
        trainer: Any = trainers.UnigramTrainer(
            vocab_size=200, special_tokens=SPECIALS, unk_token="<unk>"
        )
    else:
        tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS)
    tokenizer.train_from_iterator([words_text(2_000, seed=9, per_line=3)], trainer)
    return tokenizer


@pytest.fixture(scope="module", params=["metaspace", "prepend"])
def sentencepiece_json(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A SentencePiece-style ``tokenizer.json`` (see ``sentencepiece_style``), saved to a file."""
    path = tmp_path_factory.mktemp("sentencepiece") / "tokenizer.json"
    sentencepiece_style(request.param).save(str(path))
    return path


def whole_document_split(
    documents: Sequence[str],
    split_point: dict[str, Any],
    encode: Callable[[str], list[int]],
    eot: int,
) -> tuple[list[int], list[int]]:
    """Train and val ids per the documented rule for a tokenizer that is not cut-safe.

    Every document is encoded whole and followed by ``eot``; the tokens of document
    ``split_point["document"]`` are cut at the same fraction of them as ``char`` is of its
    characters (rounded down), and its training part ends with an ``eot`` of its own.
    """
    document, char = split_point["document"], split_point["char"]
    ids = encode(documents[document])
    cut = len(ids) * char // len(documents[document])
    train = [token for doc in documents[:document] for token in [*encode(doc), eot]]
    if char:
        train += [*ids[:cut], eot]
    val = [*ids[cut:], eot, *(t for doc in documents[document + 1 :] for t in [*encode(doc), eot])]
    return train, val


def test_a_sentencepiece_tokenizer_json_gives_the_tokens_of_each_whole_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sentencepiece_json: Path
) -> None:
    reference = tokenizers.Tokenizer.from_file(str(sentencepiece_json))

    def encode(text: str) -> list[int]:
        return reference.encode(text, add_special_tokens=False).ids

    eot = reference.token_to_id("</s>")
    monkeypatch.setattr(textfiles, "RANGE_BYTES", 400)  # text and JSON Lines ranges were cut here
    short = words_text(700, seed=1, per_line=3)
    long = [words_text(34_000, seed=seed, per_line=3) for seed in (2, 3)]
    assert min(map(len, long)) > MAX_PIECE_CHARS  # pieces of long documents were cut here
    docs = [short, long[0], "a short one", long[1], "the end"]
    write(tmp_path, "src/a.txt", short)
    write_jsonl(tmp_path / "src/b.jsonl", docs[1:])
    # Why: pieces cut at safe boundaries do not encode as they do in the whole text.
    safe = [p for p in range(len(short)) if is_safe_boundary(short, p)]
    assert any(encode(short[:p]) + encode(short[p:]) != encode(short) for p in safe)

    folders = []
    for num_proc in (1, 2):
        data = module(
            tmp_path / "src",
            tmp_path / f"cache-{num_proc}",
            tokenizer=f"hf:{sentencepiece_json}",
            num_proc=num_proc,
            val_fraction=0.3,
            shard_tokens=5_000,
        )
        assert not data.tokenizer.cut_safe
        data.prepare_data()
        folders.append(data.cache_path)
    assert shard_bytes(folders[0]) == shard_bytes(folders[1])
    meta = json.loads((folders[1] / "meta.json").read_text())
    assert meta == json.loads((folders[0] / "meta.json").read_text())
    assert meta["identity"]["cut_documents"] is False  # not the key of a cache with cuts
    train, val = read_tokens(folders[1], "train"), read_tokens(folders[1], "val")
    # All of it: each whole document's tokens and end-of-text, one more end-of-text at the cut.
    assert train[-1] == eot
    assert train[:-1] + val == [token for doc in docs for token in [*encode(doc), eot]]
    # The validation cut: inside the second long document, 30% of the bytes from the end.
    split_point = meta["split_point"]
    assert split_point["document"] == 3 and 0 < split_point["char"] < len(long[1])
    assert (train, val) == whole_document_split(docs, split_point, encode, eot)
    total = meta["train_bytes"] + meta["val_bytes"]
    assert total == sum(len(doc.encode()) for doc in docs)
    assert abs(meta["train_bytes"] - 0.7 * total) <= 1


def test_cut_safe_is_true_only_where_the_rule_is_proven(
    tiny_bpe: Path, sentencepiece_json: Path
) -> None:
    assert ByteTokenizer().cut_safe and CharTokenizer("ab").cut_safe
    assert TiktokenTokenizer.cut_safe  # r50k, cl100k, o200k (test_corpus_boundaries checks them)
    assert TiktokenFileTokenizer(tiny_bpe).cut_safe  # Llama 3's pattern
    assert TiktokenFileTokenizer(tiny_bpe, pat_str=GPT4_PATTERN).cut_safe  # train-tokenizer's
    assert TiktokenFileTokenizer(tiny_bpe, pat_str=GPT2_PATTERN).cut_safe
    assert not TiktokenFileTokenizer(tiny_bpe, pat_str=r"[^\n]+\n?|\n").cut_safe  # whole lines
    assert not get_tokenizer(f"hf:{sentencepiece_json}").cut_safe


def test_a_tiktoken_file_with_another_pattern_encodes_whole_documents(
    tmp_path: Path, tiny_bpe: Path
) -> None:
    lines = r"[^\n]+\n?|\n"  # one piece per line: a cut inside a line changes its merges
    tokenizer = TiktokenFileTokenizer(tiny_bpe, pat_str=lines, special_tokens=["<|endoftext|>"])
    reference = tiny_encoding(lines)
    docs = [words_text(300, seed=seed, per_line=40) for seed in range(4)]
    for i, doc in enumerate(docs):
        write(tmp_path, f"src/{i}.txt", doc)
    corpus = resolve_source(str(tmp_path / "src"))
    with pytest.raises(ValueError, match=r"not cut-safe.*cut_documents=tokenizer\.cut_safe"):
        build_cache(tmp_path / "refused", CorpusSplit(corpus, None, 0.5), tokenizer)
    split = CorpusSplit(corpus, None, 0.5, max_chars=64, cut_documents=False)
    folder = cache_folder(tmp_path / "cache", split, tokenizer.spec)
    meta = build_cache(folder, split, tokenizer, num_proc=1, progress=False)
    eot = reference.eot_token
    train = read_tokens(folder, "train")
    assert (train[:-1] + read_tokens(folder, "val")) == [
        token for doc in docs for token in [*reference.encode_ordinary(doc), eot]
    ]
    assert (train, read_tokens(folder, "val")) == whole_document_split(
        docs, meta["split_point"], reference.encode_ordinary, eot
    )
