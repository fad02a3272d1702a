"""Tokenizer tests: each checks real behaviour against tiktoken or Python's own UTF-8 codec."""

import functools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import requests
import tiktoken
import tiktoken.load
import tiktoken.registry
import torch
from bpe_helpers import real_encoding, tiny_encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_torch.tokenizer import (
    EOT_TEXT,
    TOKENIZER_NAMES,
    ByteTokenizer,
    CharTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    TokenizerUnavailableError,
    bpe,
    get_tokenizer,
)

SAMPLES = [
    "Hello world",
    "",
    " leading and trailing spaces  ",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "numbers 1234567890 and punctuation!?;:'\"()[]{}",
    "tabs\tand\r\nwindows newlines",
    "naïve café, Ünïcödé",
    "漢字とかなカナ 한국어 中文",
    "emoji 👩‍👩‍👧 🇫🇷 😀",
    "combining e\u0301 a\u0308 and zero-width\u200bspace",
    "a<|endoftext|>b",
    "\x00 control \x7f chars",
]
UNICODE_CASES = [
    "👩‍👩‍👧‍👦",  # ZWJ family: several code points, one grapheme
    "🇯🇵🏳️‍🌈",  # regional indicators and variation selectors
    "漢字",
    "日本語のテキスト",
    "e\u0301\u0323",  # base letter plus two combining marks
    "\u0915\u094d\u0937",  # Devanagari conjunct
    "مرحبا بالعالم",
    "\U0001d518\U0001d52b\U0001d526 outside the BMP",  # Fraktur letters
]


def _bpe_or_skip(name: str) -> TiktokenTokenizer:
    """Returns the tiktoken tokenizer, or skips when its file is not cached (no download)."""
    __tracebackhide__ = True
    real_encoding(bpe.TIKTOKEN_ENCODINGS[name])
    return TiktokenTokenizer(name)


@functools.cache
def _char() -> CharTokenizer:
    return CharTokenizer.from_texts([*SAMPLES, *UNICODE_CASES])


def _make(name: str) -> Tokenizer:
    if name == "char":
        return _char()
    if name == "byte":
        return ByteTokenizer()
    return _bpe_or_skip(name)


@pytest.fixture(params=TOKENIZER_NAMES)
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return _make(request.param)


# --- tiktoken ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "r50k_base"])
def test_gpt2_matches_tiktoken_r50k(name: str) -> None:
    reference = real_encoding("r50k_base")
    tok = get_tokenizer(name)
    assert tok.encode("Hello world") == [15496, 995]  # hand-checked GPT-2 ids
    assert tok.decode([15496, 995]) == "Hello world"
    assert tok.vocab_size == 50257
    assert tok.eot_id == 50256
    for text in SAMPLES:
        assert tok.encode(text) == reference.encode_ordinary(text)


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_larger_encodings_match_tiktoken(name: str) -> None:
    reference = real_encoding(name)
    tok = get_tokenizer(name)
    assert tok.vocab_size == reference.n_vocab
    assert tok.eot_id == reference.eot_token
    for text in SAMPLES:
        assert tok.encode(text) == reference.encode_ordinary(text)


def test_gpt2_and_r50k_share_one_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def only_r50k_cached(name: str) -> tiktoken.Encoding:  # the small test BPE stands in for it
        if name != "r50k_base":  # e.g. tiktoken's own "gpt2", which reads other files
            raise OSError(f"{name} is not cached (simulated)")
        return tiny_encoding()

    def offline(name: str) -> tiktoken.Encoding:
        raise OSError(f"{name}: nothing may be read again (simulated)")

    monkeypatch.setattr(bpe, "_ENCODINGS", {})
    monkeypatch.setattr(tiktoken, "get_encoding", only_r50k_cached)
    gpt2 = TiktokenTokenizer("gpt2")  # needs only the r50k_base file
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    r50k = TiktokenTokenizer("r50k_base")  # the loaded encoding serves the second name too
    reference = tiny_encoding()
    for text in SAMPLES:
        assert gpt2.encode(text) == r50k.encode(text) == reference.encode_ordinary(text)
    assert gpt2.eot_id == r50k.eot_id == reference.eot_token
    assert gpt2.spec == {"name": "gpt2"}
    assert r50k.spec == {"name": "r50k_base"}


def test_gpt2_endoftext_in_text_is_plain_text() -> None:
    reference = real_encoding("r50k_base")
    tok = get_tokenizer("gpt2")
    ids = tok.encode("a<|endoftext|>b")
    assert tok.eot_id not in ids
    assert ids == reference.encode_ordinary("a<|endoftext|>b")
    assert tok.decode(ids) == "a<|endoftext|>b"
    assert tok.decode([tok.eot_id]) == EOT_TEXT


def test_offline_error_names_encoding_and_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    attempts: list[str] = []

    def fail(blobpath: str) -> bytes:
        attempts.append(blobpath)
        raise requests.ConnectionError("Max retries exceeded (simulated offline)")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", fail)
    # Empty both in-process caches (ours and tiktoken's); monkeypatch restores them afterwards,
    # so tests before and after this one still see the loaded encodings.
    monkeypatch.setattr(bpe, "_ENCODINGS", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    with pytest.raises(TokenizerUnavailableError, match="'r50k_base'") as info:
        get_tokenizer("gpt2")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert f"TIKTOKEN_CACHE_DIR={str(tmp_path)!r}" in message
    assert "internet access" in message
    assert "set the TIKTOKEN_CACHE_DIR environment variable" in message
    assert "ConnectionError" in message
    assert attempts and attempts[0].endswith("r50k_base.tiktoken")


# --- byte ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", SAMPLES + UNICODE_CASES)
def test_byte_ids_are_utf8_bytes(text: str) -> None:
    tok = ByteTokenizer()
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert tok.vocab_size == 257
    assert tok.eot_id == 256


def test_byte_decode_eot_and_errors() -> None:
    tok = ByteTokenizer()
    ids = [*tok.encode("é"), tok.eot_id, *tok.encode("漢")]
    assert tok.decode(ids) == f"é{EOT_TEXT}漢"
    assert tok.decode([0xE6, 0xBC]) == "\ufffd"  # cut multi-byte char: replaced, not an exception
    with pytest.raises(ValueError, match=r"id 257 is outside this tokenizer.s range\(257\)"):
        tok.decode([104, 257])
    with pytest.raises(ValueError, match=r"id -1 is outside"):
        tok.decode([-1])


# --- char ---------------------------------------------------------------------------------------


def test_char_from_texts_learns_sorted_vocabulary() -> None:
    tok = CharTokenizer.from_texts(text for text in ["hello", "world"])  # a one-shot generator
    assert tok.chars == "dehlorw"
    assert tok.vocab_size == 8
    assert tok.eot_id == 7
    assert tok.encode("world") == [6, 4, 5, 3, 0]
    assert tok.decode([*tok.encode("hold"), tok.eot_id]) == f"hold{EOT_TEXT}"
    assert tok.spec == {"name": "char", "chars": "dehlorw"}


def test_char_matches_nanogpt_reference() -> None:
    text = SAMPLES[3] + "".join(UNICODE_CASES)
    chars = sorted(set(text))  # nanoGPT shakespeare_char's prepare.py
    stoi = {ch: i for i, ch in enumerate(chars)}
    tok = CharTokenizer.from_texts([text[:10], text[10:]])
    assert tok.chars == "".join(chars)
    assert tok.encode(text) == [stoi[c] for c in text]
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_character_error() -> None:
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at position 2 .*rebuild the data cache"):
        tok.encode("abé")
    with pytest.raises(ValueError, match=r"'😀' \(U\+1F600\) at position 1 .*from_texts"):
        tok.encode_to_numpy("a😀")
    with pytest.raises(ValueError, match=r"'\\ud800' \(U\+D800\) at position 0"):
        tok.encode("\ud800")  # lone surrogate: still a clear error, not a codec crash
    with pytest.raises(ValueError, match=r"id 4 is outside this tokenizer.s range\(4\)"):
        tok.decode([4])


def test_char_rejects_bad_vocabulary() -> None:
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer("abca")
    with pytest.raises(ValueError, match="corpus is empty"):
        CharTokenizer.from_texts(["", ""])


# --- every tokenizer ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["byte", "gpt2", "tiny-bpe-file"])
def byte_level(request: pytest.FixtureRequest, tiny_bpe: Path) -> Tokenizer:
    """A tokenizer that must round-trip any text: bytes, GPT-2's BPE and the tests' BPE file."""
    if request.param == "byte":
        return ByteTokenizer()
    if request.param == "gpt2":
        return _bpe_or_skip("gpt2")
    return get_tokenizer(f"tiktoken:{tiny_bpe}")


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_byte_level_tokenizers_round_trip_any_unicode(byte_level: Tokenizer, text: str) -> None:
    assert byte_level.decode(byte_level.encode(text)) == text


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet=_char().chars, max_size=200))
def test_char_round_trip_over_its_alphabet(text: str) -> None:
    tok = _char()
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", UNICODE_CASES)
def test_round_trip_emoji_cjk_combining(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_endoftext_text_is_never_eot(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(f"x{EOT_TEXT}y")
    assert tokenizer.eot_id not in ids
    assert tokenizer.decode(ids) == f"x{EOT_TEXT}y"
    assert tokenizer.decode([tokenizer.eot_id]) == EOT_TEXT
    assert all(0 <= i < tokenizer.vocab_size for text in SAMPLES for i in tokenizer.encode(text))


def test_satisfies_protocol(tokenizer: Tokenizer) -> None:
    assert isinstance(tokenizer, Tokenizer)
    assert tokenizer.name in TOKENIZER_NAMES


def test_spec_json_round_trip(tokenizer: Tokenizer) -> None:
    rebuilt = get_tokenizer(json.loads(json.dumps(tokenizer.spec)))
    assert type(rebuilt) is type(tokenizer)
    assert rebuilt.spec == tokenizer.spec
    assert (rebuilt.vocab_size, rebuilt.eot_id) == (tokenizer.vocab_size, tokenizer.eot_id)
    assert [rebuilt.encode(t) for t in SAMPLES] == [tokenizer.encode(t) for t in SAMPLES]


def test_pickle_round_trip(tokenizer: Tokenizer) -> None:
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.spec == tokenizer.spec
    assert clone.eot_id == tokenizer.eot_id
    assert [clone.encode(t) for t in SAMPLES] == [tokenizer.encode(t) for t in SAMPLES]


def test_encode_batch_equals_encode(tokenizer: Tokenizer) -> None:
    assert tokenizer.encode_batch(SAMPLES) == [tokenizer.encode(t) for t in SAMPLES]
    assert tokenizer.encode_batch(tuple(UNICODE_CASES)) == [
        tokenizer.encode(t) for t in UNICODE_CASES
    ]
    assert tokenizer.encode_batch([]) == []


def test_encode_to_numpy_equals_encode(tokenizer: Tokenizer) -> None:
    assert isinstance(tokenizer, (TiktokenTokenizer, ByteTokenizer, CharTokenizer))
    for text in SAMPLES + UNICODE_CASES:
        array = tokenizer.encode_to_numpy(text)
        assert array.dtype == np.uint32
        assert array.ndim == 1
        assert array.tolist() == tokenizer.encode(text)


def test_decode_accepts_arrays_and_tensors(tokenizer: Tokenizer) -> None:
    text = "Hello world"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(np.array(ids, dtype=np.int64)) == text
    assert tokenizer.decode(torch.tensor(ids)) == text
    assert tokenizer.decode(tuple(ids)) == text
    assert tokenizer.decode([]) == ""


# --- get_tokenizer --------------------------------------------------------------------------------


def test_get_tokenizer_builds_each_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(get_tokenizer("byte"), ByteTokenizer)
    monkeypatch.setitem(bpe._ENCODINGS, "r50k_base", tiny_encoding())  # no file needed
    gpt2 = get_tokenizer({"name": "gpt2"})
    assert isinstance(gpt2, TiktokenTokenizer)
    assert gpt2.encode("Hello world") == tiny_encoding().encode_ordinary("Hello world")
    assert get_tokenizer({"name": "char", "chars": "ab"}).encode("ba") == [1, 0]


def test_get_tokenizer_errors() -> None:
    with pytest.raises(
        ValueError, match=r"Unknown tokenizer 'gpt3'; valid names are: gpt2, .*, char"
    ):
        get_tokenizer("gpt3")
    with pytest.raises(ValueError, match=r"learned from the training corpus.*from_texts"):
        get_tokenizer("char")
    with pytest.raises(ValueError, match=r"learned from the training corpus"):
        get_tokenizer({"name": "char"})
    with pytest.raises(ValueError, match=r"Unexpected keys \['vocab'\]"):
        get_tokenizer({"name": "byte", "vocab": 3})
    with pytest.raises(ValueError, match=r"takes no 'chars'"):
        get_tokenizer({"name": "gpt2", "chars": "ab"})
    with pytest.raises(ValueError, match=r"has no 'name'"):
        get_tokenizer({"chars": "ab"})
