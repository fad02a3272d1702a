"""Shared pieces of the evaluation tests: tiny random models with their tokenizer, on disk."""

import json
from pathlib import Path

import torch

from llm_torch.architectures import GPT, GPTConfig, Llama, LlamaConfig
from llm_torch.architectures.base import DecoderLM
from llm_torch.architectures.registry import config_to_dict
from llm_torch.engine.checkpoint import CHECKPOINT_KEY
from llm_torch.tokenizer import TiktokenFileTokenizer, get_tokenizer

#: A few HellaSwag-format items (context, endings, label), hand-written for the tests.
FIXTURE = Path(__file__).parent / "fixtures" / "hellaswag_tiny.jsonl"


def tiny_model(arch: str, vocab_size: int, block_size: int = 32, seed: int = 0) -> DecoderLM:
    """A random 2-layer GPT or Llama (GQA) with weights scaled up so that scores differ."""
    torch.manual_seed(seed)
    if arch == "gpt":
        model: DecoderLM = GPT(
            GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32)
        )
    else:
        config = LlamaConfig(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=2,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            mlp_hidden=64,
        )
        model = Llama(config)
    with torch.no_grad():  # N(0, 0.02) weights give near-uniform predictions: sharpen them
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(10)
    return model.eval()


def tiny_tokenizer(tiny_bpe: Path) -> TiktokenFileTokenizer:
    """The tests' small BPE as an llm-torch tokenizer."""
    tokenizer = get_tokenizer(f"tiktoken:{tiny_bpe}")
    assert isinstance(tokenizer, TiktokenFileTokenizer)
    return tokenizer


def export(model: DecoderLM, tokenizer: TiktokenFileTokenizer, folder: Path) -> Path:
    """``llm-torch export``'s output for ``model``: weights, config and tokenizer files."""
    from llm_torch.interop import to_hf
    from llm_torch.tokenizer.hf_convert import write_tokenizer_json

    to_hf(model, eos_token_id=tokenizer.eot_id).save_pretrained(folder)
    write_tokenizer_json(tokenizer, folder)
    return folder


def save_checkpoint(model: DecoderLM, tokenizer_spec: dict | None, path: Path) -> Path:
    """A checkpoint as ``llm-torch fit`` writes it, reduced to what loading reads."""
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    saved = {"model": config_to_dict(model.config), "tokenizer": tokenizer_spec}
    torch.save({"state_dict": state, CHECKPOINT_KEY: saved}, path)
    return path


def write_task(folder: Path, name: str, data: Path, **overrides: object) -> Path:
    """An lm-eval multiple-choice task over a local HellaSwag-format JSON Lines file.

    ``datasets`` caches the parsed file inside ``folder``, not in the user's cache.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {"test": str(data)},
            "cache_dir": str(folder / "datasets-cache"),
        },
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "{{ctx}}",
        "doc_to_choice": "{{endings}}",
        "doc_to_target": "{{label}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
        **overrides,
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    return path
