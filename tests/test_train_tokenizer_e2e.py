"""A trained tokenizer used everywhere: fit, checkpoint, generate, export to Hugging Face."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import GPT2_ARCH, REPO, tiny_args, tiny_model_args
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_tokenizer import SAMPLES, corpus_text

from llm_torch.cli import cli
from llm_torch.engine.checkpoint import load_checkpoint
from llm_torch.generate_command import generate_command
from llm_torch.interop.command import export_command
from llm_torch.tokenizer import EOT_TEXT, HFTokenizer, TiktokenFileTokenizer, get_tokenizer
from llm_torch.tokenizer.hf_convert import bytes_to_unicode, tokenizer_json
from llm_torch.tokenizer.train import train_tokenizer

CONFIG = REPO / "configs" / "shakespeare-char.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus, folder of a 700-id BPE trained on it with one chat token)."""
    root = tmp_path_factory.mktemp("e2e")
    corpus = root / "corpus.txt"
    corpus.write_bytes(corpus_text().encode("utf-8"))
    train_tokenizer(str(corpus), 700, root / "tok", special_tokens=["<|user|>"], log=print)
    return corpus, root / "tok"


def test_bytes_to_unicode_is_gpt2s_printable_byte_alphabet() -> None:
    alphabet = bytes_to_unicode()
    assert sorted(alphabet) == list(range(256)) and len(set(alphabet.values())) == 256
    assert alphabet[ord("A")] == "A" and alphabet[ord(" ")] == "Ġ" and alphabet[ord("\n")] == "Ċ"
    assert all(
        character.isprintable() and not character.isspace() for character in alphabet.values()
    )


@pytest.fixture(scope="module")
def converted(trained: tuple[Path, Path]) -> tuple[TiktokenFileTokenizer, Any]:
    """The trained tokenizer and its ``tokenizer.json`` loaded by Hugging Face ``tokenizers``."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = get_tokenizer(f"tiktoken:{trained[1]}")
    assert isinstance(tok, TiktokenFileTokenizer)
    hf = tokenizers.Tokenizer.from_str(
        tokenizer_json(tok.mergeable_ranks, tok.pattern, tok.special_token_ids)
    )
    hf.encode_special_tokens = True  # special-token text is plain text, as in tok.encode
    return tok, hf


def test_tokenizer_json_encodes_the_corpus_like_tiktoken(
    converted: tuple[TiktokenFileTokenizer, Any],
) -> None:
    tok, hf = converted
    for text in (*SAMPLES, corpus_text()):
        ids = hf.encode(text, add_special_tokens=False).ids
        assert ids == tok.encode(text) and hf.decode(ids) == text
    assert hf.token_to_id("<|user|>") == 699 and hf.token_to_id(EOT_TEXT) == tok.eot_id == 698
    chat = "<|user|>hi<|endoftext|>"
    with_specials = type(hf).from_str(hf.to_str())
    with_specials.encode_special_tokens = False  # transformers' default: markers are ids
    assert with_specials.encode(chat).ids == tok.encode(chat, allowed_special="all")
    assert hf.encode(chat).ids == tok.encode(chat)


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_tokenizer_json_encodes_any_text_like_tiktoken(
    converted: tuple[TiktokenFileTokenizer, Any], text: str
) -> None:
    tok, hf = converted
    ids = hf.encode(text, add_special_tokens=False).ids
    assert ids == tok.encode(text) and hf.decode(ids) == text


@pytest.mark.slow  # a short fit, then generate and export
def test_fit_checkpoint_generate_and_export_with_a_trained_tokenizer(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    corpus, folder = trained
    spec = f"tiktoken:{folder / 'tokenizer.model'}"
    args = [*tiny_args(tmp_path, corpus, steps=3), *tiny_model_args(), *GPT2_ARCH]
    args.append(f"--data.tokenizer={spec}")
    run = cli(["fit", f"--config={CONFIG}", *args])
    assert run.trainer.global_step == 3
    tokenizer = get_tokenizer(spec)
    assert run.datamodule.vocab_size == tokenizer.vocab_size == 700
    cache = json.loads(next((tmp_path / "cache").rglob("meta.json")).read_text(encoding="utf-8"))
    assert json.dumps(tokenizer.spec, sort_keys=True) in json.dumps(cache, sort_keys=True)

    # The checkpoint stores the spec, sidecar values included, and rebuilds the same tokenizer.
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    model, restored = load_checkpoint(ckpt)
    assert restored is not None and restored.spec == tokenizer.spec
    assert restored.spec["special_tokens"] == {EOT_TEXT: 698, "<|user|>": 699}
    assert model.config.vocab_size == 700

    # Generate continues a prompt with text that decodes (any id of the vocabulary decodes).
    capsys.readouterr()
    generate_command(
        [f"--ckpt_path={ckpt}", "--prompt=The king", "--max_new_tokens=20", "--device=cpu"]
    )
    printed = capsys.readouterr().out
    assert printed.startswith("The king") and len(printed) > len("The king\n")
    ids = tokenizer.encode(printed.rstrip("\n").split(EOT_TEXT)[0])
    assert tokenizer.decode(ids) == printed.rstrip("\n").split(EOT_TEXT)[0]

    # Export writes a tokenizer.json that llm-torch's hf: tokenizer and transformers both read.
    pytest.importorskip("tokenizers")
    export_command([f"--ckpt_path={ckpt}", f"--out={tmp_path / 'hf'}"])
    exported = HFTokenizer(tmp_path / "hf")
    assert (exported.vocab_size, exported.eot_id) == (700, tokenizer.eot_id)
    for text in SAMPLES:
        assert exported.encode(text) == tokenizer.encode(text)
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert auto.eos_token == EOT_TEXT and auto.eos_token_id == tokenizer.eot_id
    assert auto("The king's 漢字 👩‍👩‍👧")["input_ids"] == tokenizer.encode("The king's 漢字 👩‍👩‍👧")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    idx = torch.tensor([tokenizer.encode("The king said")])
    with torch.no_grad():
        assert (hf_model(idx).logits - model(idx)).abs().max().item() < 1e-4
