"""Tokenizers read from local files: tiktoken ranks files and Hugging Face tokenizer.json."""

import base64
import json
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from bpe_helpers import META_LLAMA3_PATTERN, real_encoding

from llm_torch.tokenizer import (
    EOT_TEXT,
    LLAMA3_PATTERN,
    LLAMA3_SPECIAL_TOKENS,
    HFTokenizer,
    TiktokenFileTokenizer,
    Tokenizer,
    TokenizerUnavailableError,
    get_tokenizer,
)

SAMPLES = [
    "Hello world",
    "",
    "the cat sat on the mat; then the other cat sat there.",
    " leading and trailing spaces  \n\n",
    "numbers 1234567 and punctuation!?;:'\"()[]{}",
    "naïve café, 漢字とかな, emoji 👩‍👩‍👧",
    "I'll say it's done, we've seen, they'd",
]

MERGES = [b"th", b"the", b" t", b" the", b"at", b"cat", b" c", b" cat", b"he", b"er"]


def ranks_file(path: Path, ranks: Mapping[bytes, int]) -> Path:
    """Write ``ranks`` in tiktoken's format: ``base64(token) rank`` per line."""
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in ranks.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_ranks() -> dict[bytes, int]:
    """All 256 bytes plus a few merges (each merge's parts rank before it)."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({token: 256 + i for i, token in enumerate(MERGES)})
    return ranks


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return ranks_file(tmp_path / "tokenizer.model", tiny_ranks())


# --- tiktoken ranks files ------------------------------------------------------------------------


def test_llama3_special_tokens_have_published_ids() -> None:
    # Ids as in Llama 3.1's Hugging Face tokenizer.json (added_tokens_decoder).
    assert LLAMA3_PATTERN == META_LLAMA3_PATTERN
    ids = {token: 128000 + i for i, token in enumerate(LLAMA3_SPECIAL_TOKENS)}
    assert len(ids) == 256  # 128000 ranks + 256 specials = Llama 3's 128256 vocabulary
    assert ids["<|begin_of_text|>"] == 128000
    assert ids["<|end_of_text|>"] == 128001
    assert ids["<|finetune_right_pad_id|>"] == 128004
    assert ids["<|reserved_special_token_2|>"] == 128005
    assert ids["<|start_header_id|>"] == 128006
    assert ids["<|eom_id|>"] == 128008
    assert ids["<|eot_id|>"] == 128009
    assert ids["<|python_tag|>"] == 128010
    assert ids["<|reserved_special_token_3|>"] == 128011
    assert ids["<|reserved_special_token_247|>"] == 128255


def test_tiktoken_file_matches_tiktoken_with_llama3_defaults(tiny_model: Path) -> None:
    tok = get_tokenizer(f"tiktoken:{tiny_model}")
    assert isinstance(tok, TiktokenFileTokenizer) and isinstance(tok, Tokenizer)
    reference = tiktoken.Encoding(
        name="reference",
        pat_str=META_LLAMA3_PATTERN,
        mergeable_ranks=tiny_ranks(),
        special_tokens={token: 266 + i for i, token in enumerate(LLAMA3_SPECIAL_TOKENS)},
    )
    assert tok.vocab_size == 266 + 256
    assert tok.eot_id == 267  # <|end_of_text|>, second special token after the ranks
    assert tok.encode("the cat") == [257, 263]  # hand-checked: "the", " cat"
    for text in SAMPLES:
        assert tok.encode(text) == reference.encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]
    array = tok.encode_to_numpy(SAMPLES[2])
    assert array.dtype == np.uint32 and array.tolist() == tok.encode(SAMPLES[2])


def test_tiktoken_special_text_is_plain_text_and_eot_decodes_to_eot_text(tiny_model: Path) -> None:
    tok = get_tokenizer(f"tiktoken:{tiny_model}")
    ids = tok.encode("a<|end_of_text|>b<|begin_of_text|>")
    assert all(i < 266 for i in ids)
    assert tok.decode(ids) == "a<|end_of_text|>b<|begin_of_text|>"
    assert tok.decode([*tok.encode("x"), tok.eot_id, *tok.encode("y")]) == f"x{EOT_TEXT}y"
    assert tok.decode([266]) == "<|begin_of_text|>"
    with pytest.raises(ValueError, match=r"outside this tokenizer.s range\(522\)"):
        tok.decode([522])


def test_tiktoken_spec_round_trips_through_json_and_pickle(tiny_model: Path) -> None:
    tok = get_tokenizer(f"tiktoken:{tiny_model}")
    spec = json.loads(json.dumps(tok.spec))
    assert spec["name"] == "tiktoken" and spec["path"] == str(tiny_model.resolve())
    assert spec["eot"] == "<|end_of_text|>" and len(spec["sha256"]) == 64
    for clone in (get_tokenizer(spec), pickle.loads(pickle.dumps(tok))):
        assert clone.spec == tok.spec
        assert (clone.vocab_size, clone.eot_id) == (tok.vocab_size, tok.eot_id)
        assert [clone.encode(t) for t in SAMPLES] == [tok.encode(t) for t in SAMPLES]


def test_tiktoken_dict_spec_overrides_pattern_specials_and_eot(tiny_model: Path) -> None:
    explicit = get_tokenizer(
        {
            "name": "tiktoken",
            "path": str(tiny_model),
            "pat_str": r"\S+|\s+",
            "special_tokens": {"<|endoftext|>": 300, "<|pad|>": 301},
            "eot": 300,
        }
    )
    assert (explicit.vocab_size, explicit.eot_id) == (302, 300)
    reference = tiktoken.Encoding(
        name="reference",
        pat_str=r"\S+|\s+",
        mergeable_ranks=tiny_ranks(),
        special_tokens={"<|endoftext|>": 300},
    )
    for text in SAMPLES:
        assert explicit.encode(text) == reference.encode_ordinary(text)
    assert explicit.encode(" the") != get_tokenizer(f"tiktoken:{tiny_model}").encode(" the")
    assert explicit.spec["eot"] == "<|endoftext|>"
    assert get_tokenizer(json.loads(json.dumps(explicit.spec))).spec == explicit.spec
    # A list places the tokens after the ranks; the eot is found among the usual names.
    listed = get_tokenizer(
        {"name": "tiktoken", "path": str(tiny_model), "special_tokens": ["<|pad|>", "</s>"]}
    )
    assert (listed.vocab_size, listed.eot_id) == (268, 267)


def test_gpt2_ranks_written_to_a_file_encode_like_tiktoken(tmp_path: Path) -> None:
    gpt2 = real_encoding("r50k_base")
    path = ranks_file(tmp_path / "r50k.tiktoken", gpt2._mergeable_ranks)
    tok = get_tokenizer(
        {
            "name": "tiktoken",
            "path": str(path),
            "pat_str": gpt2._pat_str,
            "special_tokens": {"<|endoftext|>": 50256},
        }
    )
    assert (tok.vocab_size, tok.eot_id) == (50257, 50256)
    for text in SAMPLES:
        assert tok.encode(text) == gpt2.encode_ordinary(text)


def test_tiktoken_file_errors(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tiktoken BPE ranks file .*nowhere.* does not"):
        get_tokenizer(f"tiktoken:{tmp_path / 'nowhere'}")
    bad = tmp_path / "bad.model"
    bad.write_text("IQ== 0\nnot-a-line\n")
    with pytest.raises(ValueError, match=r"line 2 is not 'base64-token rank'"):
        get_tokenizer(f"tiktoken:{bad}")
    partial = ranks_file(tmp_path / "partial.model", {b"a": 0, b"b": 1})
    with pytest.raises(ValueError, match=r"lacks single-byte tokens \(e.g. byte 0\)"):
        get_tokenizer(f"tiktoken:{partial}")
    with pytest.raises(ValueError, match=r"eot='<\|nope\|>' is not one of the special tokens"):
        get_tokenizer({"name": "tiktoken", "path": str(tiny_model), "eot": "<|nope|>"})
    with pytest.raises(ValueError, match=r"ids \[3\] are also ranks"):
        get_tokenizer({"name": "tiktoken", "path": str(tiny_model), "special_tokens": {"x": 3}})
    with pytest.raises(ValueError, match=r"Unexpected keys \['chars'\].*'tiktoken' takes 'path'"):
        get_tokenizer({"name": "tiktoken", "path": str(tiny_model), "chars": "ab"})
    with pytest.raises(ValueError, match=r"needs a 'path', e.g. 'tiktoken:/path/to/tokenizer"):
        get_tokenizer({"name": "tiktoken"})


def test_changed_file_is_detected_from_a_saved_spec(tiny_model: Path) -> None:
    spec = get_tokenizer(f"tiktoken:{tiny_model}").spec
    ranks = tiny_ranks()
    ranks[b"he"], ranks[b"th"] = ranks[b"th"], ranks[b"he"]
    ranks_file(tiny_model, ranks)
    with pytest.raises(ValueError, match=r"has changed since this spec was saved"):
        get_tokenizer(spec)
    assert get_tokenizer({k: v for k, v in spec.items() if k != "sha256"}).encode("the")


# --- Hugging Face tokenizer.json -----------------------------------------------------------------


def train_byte_level_bpe(directory: Path, special_tokens: list[str]) -> Path:
    """Train a tiny byte-level BPE with ``tokenizers`` and save it as ``tokenizer.json``."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SAMPLES * 20, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"


def test_hf_tokenizer_matches_tokenizers_and_round_trips(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as RawTokenizer

    path = train_byte_level_bpe(tmp_path / "tok", ["<|endoftext|>"])
    raw = RawTokenizer.from_file(str(path))
    tok = get_tokenizer(f"hf:{path}")
    assert isinstance(tok, HFTokenizer) and isinstance(tok, Tokenizer)
    assert tok.vocab_size == raw.get_vocab_size() > 256
    assert tok.eot_id == raw.token_to_id("<|endoftext|>")
    for text in SAMPLES:
        assert tok.encode(text) == raw.encode(text).ids
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]
    assert tok.encode_to_numpy(SAMPLES[2]).tolist() == tok.encode(SAMPLES[2])
    # Special-token text stays text (the raw tokenizer would emit the EOT id here).
    assert raw.token_to_id("<|endoftext|>") in raw.encode("a<|endoftext|>b").ids
    ids = tok.encode("a<|endoftext|>b")
    assert tok.eot_id not in ids and tok.decode(ids) == "a<|endoftext|>b"
    assert tok.decode([*tok.encode("x"), tok.eot_id, *tok.encode("y")]) == f"x{EOT_TEXT}y"
    # A directory holding tokenizer.json names the same tokenizer.
    assert get_tokenizer(f"hf:{path.parent}").spec == tok.spec


def test_hf_spec_round_trips_through_json_and_pickle(tmp_path: Path) -> None:
    path = train_byte_level_bpe(tmp_path, ["<|endoftext|>"])
    tok = get_tokenizer(f"hf:{path}")
    spec = json.loads(json.dumps(tok.spec))
    assert spec == {
        "name": "hf",
        "path": str(path.resolve()),
        "sha256": spec["sha256"],
        "eot": "<|endoftext|>",
    }
    for clone in (get_tokenizer(spec), pickle.loads(pickle.dumps(tok))):
        assert clone.spec == tok.spec
        assert (clone.vocab_size, clone.eot_id) == (tok.vocab_size, tok.eot_id)
        assert [clone.encode(t) for t in SAMPLES] == [tok.encode(t) for t in SAMPLES]


def test_hf_eot_from_config_then_known_names_then_spec(tmp_path: Path) -> None:
    path = train_byte_level_bpe(tmp_path, ["<unk>", "<s>", "</s>", "<|im_end|>"])
    assert get_tokenizer(f"hf:{path}").eot_id == 2  # "</s>", the first known name present
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": {"content": "<|im_end|>"}})
    )
    assert get_tokenizer(f"hf:{path}").eot_id == 3
    assert get_tokenizer({"name": "hf", "path": str(path), "eot": 1}).eot_id == 1
    assert get_tokenizer({"name": "hf", "path": str(path), "eot": "<s>"}).spec["eot"] == "<s>"
    with pytest.raises(ValueError, match=r"eot='hello' .* must be one of its special tokens"):
        get_tokenizer({"name": "hf", "path": str(path), "eot": "hello"})


def test_hf_without_any_separator_names_the_fix(tmp_path: Path) -> None:
    path = train_byte_level_bpe(tmp_path, ["<pad>"])
    with pytest.raises(ValueError, match=r"eot=None .*'eot': '</s>'"):
        get_tokenizer(f"hf:{path}")


def test_hf_missing_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = train_byte_level_bpe(tmp_path, ["<|endoftext|>"])
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(TokenizerUnavailableError, match=r"pip install tokenizers"):
        get_tokenizer(f"hf:{path}")


def test_file_specs_do_not_disturb_named_tokenizers() -> None:
    with pytest.raises(ValueError, match=r"Unknown tokenizer 'gpt3'.*'hf:/path/tokenizer.json'"):
        get_tokenizer("gpt3")
    with pytest.raises(ValueError, match=r"Unknown tokenizer 'llama:/x'"):
        get_tokenizer("llama:/x")
    assert get_tokenizer("byte").spec == {"name": "byte"}
