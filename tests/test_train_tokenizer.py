"""``llm-torch train-tokenizer``: training, the tiktoken files it writes, loading, evaluation."""

import base64
import itertools
import json
import pickle
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import regex
import tiktoken
from bpe_helpers import _EXTRA, merge_pair, real_encoding
from data_helpers import words_text
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_torch.cli import main
from llm_torch.tokenizer import EOT_TEXT, TiktokenFileTokenizer, get_tokenizer, train
from llm_torch.tokenizer.command import train_tokenizer_command
from llm_torch.tokenizer.tiktoken_file import SIDECAR_FORMAT
from llm_torch.tokenizer.train import GPT4_PATTERN, train_tokenizer, unique_ranks

REPO = Path(__file__).resolve().parents[1]
TINYSHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

CHAT = ["<|user|>", "<|assistant|>"]

SAMPLES = [
    "Hello world",
    "",
    "KING:\nThou art my lord, and I'll say it's done; we've seen, they'd come.\n\n",
    " leading and trailing spaces  \n\n\n",
    "numbers 1234567 and punctuation!?;:'\"()[]{}",
    "naïve café, 漢字とかな, emoji 👩‍👩‍👧 🇫🇷, combining e\u0301 a\u0308\u0323",
    "\u00a0\u3000\t\r\n mixed whitespace",
]


def corpus_text() -> str:
    """English-like words and made-up ones, contractions, digits, blank lines, multi-byte letters.

    The made-up words (2-4 random syllables, a few hundred of them) give BPE enough distinct
    pairs to learn several hundred merges.
    """
    rng = random.Random(0)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ñá", "çé", "ßö"]
    coined = ["".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(400)]
    lines = [" ".join(rng.choices(coined, k=9)).capitalize() + "." for _ in range(800)]
    return words_text(6_000) + "\n".join(lines) + "\n" + _EXTRA * 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A 600-id BPE with two chat tokens besides <|endoftext|>: its output folder."""
    out = tmp_path_factory.mktemp("trained") / "tok"
    train_tokenizer(str(corpus), 600, out, special_tokens=CHAT, log=lambda _: None)
    return out


def read_exact(path: Path) -> str:
    """A file's text with its newlines as they are (``read_text`` would turn CRLF into LF)."""
    return path.read_bytes().decode("utf-8")


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken ranks file independently of llm-torch (and of tiktoken's file cache)."""
    ranks = {}
    for line in path.read_text(encoding="ascii").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def reference_encoding(folder: Path) -> tiktoken.Encoding:
    """A tiktoken ``Encoding`` made from the two files directly, as any tiktoken user would."""
    sidecar = json.loads((folder / "tokenizer.model.json").read_text(encoding="utf-8"))
    return tiktoken.Encoding(
        name="reference",
        pat_str=sidecar["pat_str"],
        mergeable_ranks=read_ranks(folder / "tokenizer.model"),
        special_tokens=sidecar["special_tokens"],
    )


def reference_bpe(text: str, pattern: str, merges: int) -> dict[bytes, int]:
    """Textbook byte-level BPE: recount the pairs, merge the most frequent (ties: smaller pair).

    Pairs are compared as token ids, as rustbpe documents; all pairs are recounted every step, so
    this shares nothing with rustbpe's incremental bookkeeping.
    """
    vocab = [bytes([byte]) for byte in range(256)]
    words = Counter(tuple(piece.encode("utf-8")) for piece in regex.findall(pattern, text))
    for _ in range(merges):
        pairs: Counter[tuple[int, int]] = Counter()
        for word, count in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        new_id = len(vocab)
        vocab.append(vocab[best[0]] + vocab[best[1]])
        merged: Counter[tuple[int, ...]] = Counter()
        for word, count in words.items():
            merged[merge_pair(word, best, new_id)] += count
        words = merged
    return {token: rank for rank, token in enumerate(vocab)}


# --- what training writes -------------------------------------------------------------------------


def test_vocab_size_is_exact_and_counts_special_tokens(trained: Path) -> None:
    ranks = read_ranks(trained / "tokenizer.model")
    assert sorted(ranks.values()) == list(range(597))  # 600 - 3 special tokens, dense
    sidecar = json.loads((trained / "tokenizer.model.json").read_text(encoding="utf-8"))
    assert sidecar["format"] == SIDECAR_FORMAT and sidecar["pat_str"] == GPT4_PATTERN
    assert sidecar["special_tokens"] == {EOT_TEXT: 597, "<|user|>": 598, "<|assistant|>": 599}
    tok = get_tokenizer(f"tiktoken:{trained / 'tokenizer.model'}")
    assert (tok.vocab_size, tok.eot_id) == (600, 597)
    assert tok.decode([599]) == "<|assistant|>"
    with pytest.raises(ValueError, match=r"outside this tokenizer.s range\(600\)"):
        tok.decode([600])


def test_ranks_equal_a_textbook_bpe_on_the_same_text(corpus: Path, tmp_path: Path) -> None:
    train_tokenizer(str(corpus), 256 + 120 + 1, tmp_path / "tok", log=lambda _: None)
    expected = reference_bpe(read_exact(corpus), GPT4_PATTERN, 120)
    assert read_ranks(tmp_path / "tok" / "tokenizer.model") == expected


@pytest.mark.slow  # a second Python process
def test_training_is_deterministic_byte_for_byte(
    corpus: Path, trained: Path, tmp_path: Path
) -> None:
    # Another process: rustbpe's hash maps get other random seeds there.
    code = (
        "import sys; from llm_torch.tokenizer.train import train_tokenizer; "
        "train_tokenizer(sys.argv[1], 600, sys.argv[2], special_tokens=sys.argv[3:])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(corpus), str(tmp_path / "again"), *CHAT],
        check=True,
        capture_output=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        timeout=300,
    )
    for name in ("tokenizer.model", "tokenizer.model.json"):
        assert (tmp_path / "again" / name).read_bytes() == (trained / name).read_bytes()


def test_seed_picks_files_before_the_max_chars_cut(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):  # each file its own words, so which files are read changes the merges
        words = " ".join(
            f"w{chr(97 + i)}{chr(97 + j)}{chr(97 + k)}" for j in range(8) for k in range(8)
        )
        (folder / f"{i}.txt").write_text((words + "\n") * 30, encoding="utf-8")

    def ranks(seed: int | None, name: str) -> bytes:
        out = tmp_path / name
        result = train_tokenizer(str(folder), 300, out, max_chars=40_000, seed=seed, log=print)
        assert result.stats.chars == 40_000
        return (out / "tokenizer.model").read_bytes()

    assert ranks(1, "a") == ranks(1, "b")
    assert len({ranks(None, "c"), ranks(1, "d"), ranks(2, "e"), ranks(3, "f")}) > 1


def test_cutting_long_texts_leaves_the_counts_unchanged(
    corpus: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Indented lines and blank-line runs: a cut at any newline would split pieces there.
    text = read_exact(corpus) + ("def f(x):\n    return x  " + "\n" * 40) * 300
    monkeypatch.setattr(train, "PIECE_CHARS", 500)  # ~105 KB become ~230 texts
    pieces = list(train._pieces([text[:40_000], text[40_000:]]))
    assert "".join(pieces) == text and len(pieces) > 200
    assert all(len(piece) <= 500 for piece in pieces)
    assert all(not piece[0].isspace() for piece in pieces[1:])  # cut before a non-space
    whole = Counter(regex.findall(GPT4_PATTERN, text))
    assert (
        sum((Counter(regex.findall(GPT4_PATTERN, piece)) for piece in pieces), Counter()) == whole
    )
    train_tokenizer(str(corpus), 600, tmp_path / "cut", special_tokens=CHAT, log=lambda _: None)
    cut = (tmp_path / "cut" / "tokenizer.model").read_bytes()
    assert cut == (trained / "tokenizer.model").read_bytes()


def test_long_texts_are_cut_after_the_last_newline_before_a_non_space(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(train, "PIECE_CHARS", 10)
    chunks = ["ab\ncd\n  e", "f\nghijklmnopqrstu\n\nvw", "xyz12"]
    # By hand: "\n  " is skipped (a space follows), a 10-character window without a newline is
    # cut at 10, and "\n\n" then a letter is a line start.
    expected = ["ab\n", "cd\n  ef\n", "ghijklmnop", "qrstu\n\n", "vwxyz12"]
    assert list(train._pieces(chunks)) == expected


def test_unique_ranks_drops_a_repeated_token_and_keeps_the_order() -> None:
    learned = [(b"a", 0), (b"b", 1), (b"ab", 2), (b"abab", 4), (b"ab", 3), (b"x", 5)]
    assert unique_ranks(learned) == {b"a": 0, b"b": 1, b"ab": 2, b"abab": 3, b"x": 4}


# --- using the trained tokenizer ----------------------------------------------------------------


def test_encodes_like_tiktoken_loading_the_same_files(trained: Path) -> None:
    tok = get_tokenizer(f"tiktoken:{trained}")  # a folder means its tokenizer.model
    reference = reference_encoding(trained)
    for text in SAMPLES:
        assert tok.encode(text) == reference.encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("the king") == reference.encode_ordinary("the king")
    assert len(tok.encode(" the")) == 1  # a merge was learned for the most common word


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_any_unicode_round_trips(trained: Path, text: str) -> None:
    tok = get_tokenizer(f"tiktoken:{trained / 'tokenizer.model'}")
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_ids_only_when_allowed(trained: Path) -> None:
    tok = get_tokenizer(f"tiktoken:{trained / 'tokenizer.model'}")
    assert isinstance(tok, TiktokenFileTokenizer)
    reference = reference_encoding(trained)
    text = "<|user|>hi<|assistant|>yo<|endoftext|>"
    plain = tok.encode(text)
    assert max(plain) < 597 and tok.decode(plain) == text
    assert plain == reference.encode(text, disallowed_special=())
    assert tok.encode_to_numpy(text).tolist() == plain
    allowed = tok.encode(text, allowed_special="all")
    assert allowed == reference.encode(text, allowed_special="all")
    assert [i for i in allowed if i >= 597] == [598, 599, 597]
    only_user = tok.encode(text, allowed_special={"<|user|>"})
    assert [i for i in only_user if i >= 597] == [598]


def test_spec_carries_the_sidecar_so_it_survives_losing_it(trained: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("tokenizer.model", "tokenizer.model.json"):
        (copy / name).write_bytes((trained / name).read_bytes())
    tok = get_tokenizer(f"tiktoken:{copy / 'tokenizer.model'}")
    spec = json.loads(json.dumps(tok.spec))
    assert spec["pat_str"] == GPT4_PATTERN and spec["eot"] == EOT_TEXT
    assert spec["special_tokens"] == {EOT_TEXT: 597, "<|user|>": 598, "<|assistant|>": 599}
    (copy / "tokenizer.model.json").unlink()
    for clone in (get_tokenizer(spec), pickle.loads(pickle.dumps(tok))):
        assert clone.spec == tok.spec and clone.eot_id == 597
        assert [clone.encode(t) for t in SAMPLES] == [tok.encode(t) for t in SAMPLES]
    # Without its sidecar the bare file falls back to Llama 3's layout, as before.
    assert get_tokenizer(f"tiktoken:{copy / 'tokenizer.model'}").vocab_size == 597 + 256


@pytest.mark.slow  # three BPE trainings on 1 MB
@pytest.mark.skipif(not TINYSHAKESPEARE.is_file(), reason=f"{TINYSHAKESPEARE} is not present")
def test_domain_fitted_bpe_beats_gpt2_on_held_out_tinyshakespeare(tmp_path: Path) -> None:
    gpt2 = real_encoding("r50k_base")
    text = read_exact(TINYSHAKESPEARE)
    cut = int(len(text) * 0.9)
    (tmp_path / "train.txt").write_bytes(text[:cut].encode("utf-8"))
    held_out = text[cut:]
    counts = {}
    for vocab_size in (2048, 4096):
        out = tmp_path / f"tok{vocab_size}"
        train_tokenizer(str(tmp_path / "train.txt"), vocab_size, out, log=lambda _: None)
        ours = get_tokenizer(f"tiktoken:{out}")
        counts[vocab_size] = len(ours.encode(held_out))
        assert ours.decode(ours.encode(held_out)) == held_out
    # 4,096 ids fitted to the plays beat GPT-2's 50,257 ids on unseen lines of them.
    assert counts[4096] < len(gpt2.encode_ordinary(held_out)) == 36_059
    # At 2,048 ids GPT-2 still wins (39,698 vs 36,059 tokens). That is BPE, not the trainer:
    # Hugging Face's BpeTrainer with the same pre-tokenizer yields exactly as many tokens.
    assert counts[2048] == hf_bpe_token_count(text[:cut], held_out, 2048) == 39_698


def hf_bpe_token_count(train: str, held_out: str, vocab_size: int) -> int:
    """Tokens on ``held_out`` of a byte-level BPE trained by Hugging Face's ``BpeTrainer``."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Regex, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([train], trainer)
    return len(tokenizer.encode(held_out).ids)


def test_eval_prints_bytes_per_token_next_to_references(
    trained: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_tokenizer_command(["--eval", str(trained), "--source", str(corpus), "--compare", "byte"])
    out = capsys.readouterr().out
    text = read_exact(corpus)
    tokens = len(reference_encoding(trained).encode_ordinary(text))
    size = len(text.encode("utf-8"))
    assert f"({size:,} bytes)" in out
    ours = next(line for line in out.splitlines() if line.startswith(str(trained)))
    assert ours.split()[1:4] == ["600", f"{tokens:,}", f"{size / tokens:.3f}"]
    byte = next(line for line in out.splitlines() if line.startswith("byte"))
    assert byte.split()[1:5] == ["257", f"{size:,}", "1.000", f"{size / tokens:.3f}x"]


# --- bad input ------------------------------------------------------------------------------------


def test_bad_settings_are_refused_before_reading(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--vocab_size 258 is too small.*at least 259"):
        train_tokenizer(str(corpus), 258, tmp_path / "a", special_tokens=["<|x|>", "<|y|>"])
    with pytest.raises(ValueError, match=r"--vocab_size 255 is too small.*at least 257"):
        train_tokenizer(str(corpus), 255, tmp_path / "a")
    with pytest.raises(ValueError, match=r"not a valid regex"):
        train_tokenizer(str(corpus), 300, tmp_path / "a", pattern="(")
    with pytest.raises(ValueError, match=r"does not match every character"):
        train_tokenizer(str(corpus), 300, tmp_path / "a", pattern=r"\w+")
    with pytest.raises(ValueError, match=r"Special token '' is empty"):
        train_tokenizer(str(corpus), 300, tmp_path / "a", special_tokens=[""])
    with pytest.raises(ValueError, match=r"--max_chars must be positive"):
        train_tokenizer(str(corpus), 300, tmp_path / "a", max_chars=0)
    assert not (tmp_path / "a").exists()


def test_empty_or_too_small_sources_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"holds no text to train on"):
        train_tokenizer(str(empty), 300, tmp_path / "a", log=lambda _: None)
    small = tmp_path / "small.txt"
    small.write_text("ab ab ab cd\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"supports only \d+ merges, fewer than the 743"):
        train_tokenizer(str(small), 1000, tmp_path / "a", log=lambda _: None)
    with pytest.raises(ValueError, match=r"nothing exists at"):
        train_tokenizer(str(tmp_path / "missing"), 300, tmp_path / "a", log=lambda _: None)
    assert not (tmp_path / "a").exists()


def test_existing_output_needs_overwrite(corpus: Path, trained: Path, tmp_path: Path) -> None:
    before = (trained / "tokenizer.model").read_bytes()
    with pytest.raises(FileExistsError, match=r"already exists and is not empty.*--overwrite"):
        train_tokenizer(str(corpus), 300, trained)
    assert (trained / "tokenizer.model").read_bytes() == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    train_tokenizer(str(corpus), 300, out, overwrite=True, log=lambda _: None)
    assert get_tokenizer(f"tiktoken:{out}").vocab_size == 300
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # only our files replaced


def test_corrupt_ranks_or_sidecar_fail_at_load(trained: Path, tmp_path: Path) -> None:
    model = (trained / "tokenizer.model").read_bytes()
    sidecar = (trained / "tokenizer.model.json").read_text(encoding="utf-8")

    def load(ranks: bytes, side: str) -> None:
        (tmp_path / "tokenizer.model").write_bytes(ranks)
        (tmp_path / "tokenizer.model.json").write_text(side, encoding="utf-8")
        get_tokenizer(f"tiktoken:{tmp_path / 'tokenizer.model'}")

    lines = model.splitlines(keepends=True)
    with pytest.raises(ValueError, match=r"line 597 is not 'base64-token rank'"):
        load(b"".join(lines[:-1]) + lines[-1][:5], sidecar)  # truncated mid-line
    with pytest.raises(ValueError, match=r"line 597: .* rank 3 is repeated"):
        load(b"".join(lines[:-1]) + lines[-1].split()[0] + b" 3\n", sidecar)
    with pytest.raises(ValueError, match=r"lacks single-byte tokens \(e.g. byte 0\)"):
        load(b"".join(lines[1:]), sidecar)
    with pytest.raises(ValueError, match=r"was written for other ranks"):
        load(b"".join(lines[:-1]), sidecar)  # a ranks file that lost its last line
    with pytest.raises(ValueError, match=r"sidecar .* is not valid JSON"):
        load(model, sidecar[:-10])
    with pytest.raises(ValueError, match=r"needs 'pat_str'"):
        load(model, sidecar.replace('"eot": "<|endoftext|>"', '"eot": 5'))
    load(model, sidecar)  # and the intact pair loads


def test_cli_reports_bad_input_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["llm-torch", "train-tokenizer", "--source", "shakespeare", "--vocab_size", "100"]
    monkeypatch.setattr(sys, "argv", [*args, "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("llm-torch: error: --vocab_size 100 is too small") and err.count("\n") == 1
    )
