"""Llama parity with ``transformers.LlamaForCausalLM``: import, export, save_pretrained dirs."""

import copy
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llm_torch.architectures import Llama, LlamaConfig  # noqa: E402
from llm_torch.components import rope_tables  # noqa: E402
from llm_torch.engine.module import CausalLMModule  # noqa: E402
from llm_torch.interop import from_hf, to_hf  # noqa: E402

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

# Vocabularies that are not multiples of 64; MHA, GQA and MQA; tied and untied heads; head_dim
# different from hidden / heads; llama3 scaling with a context (96) beyond its original 32.
HF_CONFIGS: dict[str, dict[str, Any]] = {
    "mha-untied": {"vocab_size": 1001, "num_attention_heads": 4, "num_key_value_heads": 4},
    "gqa-tied": {
        "vocab_size": 517,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
    },
    "mqa-untied-head-dim": {
        "vocab_size": 301,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 24,
    },
    "gqa-llama3-tied": {
        "vocab_size": 777,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3,
    },
    "mha-llama3-untied": {
        "vocab_size": 259,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "rope_theta": 10000.0,
        "rope_scaling": LLAMA3,
    },
}


def random_hf_llama(seed: int, **kwargs: Any) -> "transformers.LlamaForCausalLM":
    """A randomly initialised LlamaForCausalLM built locally, with RMSNorms perturbed off 1.

    The wide initialisation makes activations large enough that small deviations (a wrong RoPE
    theta or layout, a wrong epsilon) exceed the 1e-4 tolerance. The eager attention path keeps
    the reference independent of the SDPA kernel that llm-torch uses.
    """
    torch.manual_seed(seed)
    defaults = {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "max_position_embeddings": 96,
        "initializer_range": 0.2,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    # Deep copy: transformers 5 writes rope_theta into the rope_scaling dict it is given.
    config = transformers.LlamaConfig(**copy.deepcopy({**defaults, **kwargs}))
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.5 * torch.randn_like(param))
    return model


def hf_logits(model: "transformers.PreTrainedModel", idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


def ours(model: Llama, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_imported_llama_matches_transformers_logits(name: str) -> None:
    kwargs = HF_CONFIGS[name]
    hf = random_hf_llama(seed=len(name), **kwargs)
    model = from_hf(hf)
    assert isinstance(model, Llama)
    cfg = model.config
    assert (cfg.vocab_size, cfg.block_size) == (kwargs["vocab_size"], 96)
    assert cfg.resolved_n_kv_head == kwargs["num_key_value_heads"]
    assert cfg.tie_embeddings == kwargs.get("tie_word_embeddings", False)
    assert (model.lm_head.weight is model.wte.weight) == cfg.tie_embeddings
    assert cfg.rope_scaling == kwargs.get("rope_scaling")
    idx = torch.randint(0, kwargs["vocab_size"], (2, 96))
    expected = hf_logits(hf, idx)
    assert expected.abs().max() > 1.0  # large logits: a small relative error would show
    assert max_diff(ours(model, idx), expected) < 1e-4
    # Export the imported model again: still the same function.
    exported = to_hf(model)
    assert isinstance(exported, transformers.LlamaForCausalLM)
    assert max_diff(hf_logits(exported, idx), expected) < 1e-4


def test_llama3_scaling_changes_the_tables_and_the_logits() -> None:
    hf = random_hf_llama(seed=3, **HF_CONFIGS["mha-llama3-untied"])
    model = from_hf(hf)
    plain_cos, _ = rope_tables(32, 96, 10000.0)
    assert max_diff(model.rope.cos, plain_cos) > 0.1  # scaling really changed frequencies
    unscaled = Llama(LlamaConfig(**{**model.config.__dict__, "rope_scaling": None})).eval()
    unscaled.load_state_dict(model.state_dict())
    idx = torch.randint(0, 259, (2, 96))
    assert max_diff(ours(unscaled, idx), hf_logits(hf, idx)) > 1e-2


def test_import_copies_weights_rather_than_sharing_them() -> None:
    hf = random_hf_llama(seed=1, **HF_CONFIGS["gqa-tied"])
    model = from_hf(hf)
    with torch.no_grad():
        hf.model.embed_tokens.weight.zero_()
        hf.model.layers[0].self_attn.q_proj.weight.zero_()
    assert model.wte.weight.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.abs().sum() > 0


def test_save_pretrained_directories_round_trip(tmp_path: Path) -> None:
    hf = random_hf_llama(seed=2, **HF_CONFIGS["gqa-llama3-tied"])
    hf.save_pretrained(tmp_path / "hf")
    model = from_hf(tmp_path / "hf")
    assert isinstance(model, Llama) and model.config.rope_scaling == LLAMA3
    idx = torch.randint(0, 777, (2, 80))
    expected = hf_logits(hf, idx)
    assert max_diff(ours(model, idx), expected) < 1e-4

    to_hf(model, eos_token_id=1, bos_token_id=0).save_pretrained(tmp_path / "exported")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert isinstance(reloaded, transformers.LlamaForCausalLM)
    assert (reloaded.config.bos_token_id, reloaded.config.eos_token_id) == (0, 1)
    assert reloaded.config.tie_word_embeddings
    assert max_diff(hf_logits(reloaded, idx), expected) < 1e-4


def test_init_from_needs_no_head_dim_when_it_is_the_default(tmp_path: Path) -> None:
    # transformers 5 writes head_dim into every config.json; an arch that leaves it at its
    # default (n_embd // n_head, as configs/llama-3.2-1b.yaml does) is the same model.
    hf = random_hf_llama(seed=5, **HF_CONFIGS["gqa-tied"])
    hf.save_pretrained(tmp_path / "hf")
    arch = LlamaConfig(
        vocab_size=517,
        block_size=96,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        mlp_hidden=96,
        norm_eps=1e-6,
        tie_embeddings=True,
    )
    module = CausalLMModule(arch, init_from=str(tmp_path / "hf"))
    module.configure_model()
    idx = torch.randint(0, 517, (2, 96))
    assert max_diff(ours(module.model.eval(), idx), hf_logits(hf, idx)) < 1e-4


def test_init_from_compares_derived_fields_by_what_they_resolve_to(tmp_path: Path) -> None:
    # Meta's MLP rule for width 64 gives 256 (8 * 64 / 3, up to a multiple of 256), and 4 of 4
    # key/value heads is n_kv_head's default: an arch leaving both unset is this model.
    hf = random_hf_llama(
        seed=6, vocab_size=50, intermediate_size=256, num_attention_heads=4, num_key_value_heads=4
    )
    hf.save_pretrained(tmp_path / "hf")
    arch = LlamaConfig(vocab_size=50, block_size=96, n_layer=2, n_head=4, n_embd=64)
    assert (arch.mlp_hidden, arch.n_kv_head) == (None, None)
    module = CausalLMModule(arch, init_from=str(tmp_path / "hf"))
    module.configure_model()
    idx = torch.randint(0, 50, (2, 96))
    assert max_diff(ours(module.model.eval(), idx), hf_logits(hf, idx)) < 1e-4
    wider = CausalLMModule(replace(arch, mlp_hidden=384), init_from=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="mlp_hidden: checkpoint 256 vs config 384"):
        wider.configure_model()


def test_export_of_a_native_model_with_padded_vocabulary() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        block_size=64,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=32,
        mlp_hidden=40,
        rope_theta=500000.0,
        rope_scaling={**LLAMA3, "original_max_position_embeddings": 16},
        pad_vocab_size_multiple=64,
    )
    model = Llama(config).eval()
    with torch.no_grad():  # make the small default init produce non-trivial logits
        for param in model.parameters():
            param.mul_(10)
    hf = to_hf(model)
    assert hf.config.vocab_size == 100 and hf.config.bos_token_id is None
    idx = torch.randint(0, 100, (2, 64))
    assert max_diff(hf_logits(hf, idx), ours(model, idx)) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attention_bias": True}, r"attention_bias=True.*supports only attention_bias=False"),
        ({"mlp_bias": True}, r"mlp_bias=True"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu'"),
        (
            {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
            r"rope_type='linear'.*rope_type='default' or rope_type='llama3'",
        ),
    ],
)
def test_unsupported_variants_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    hf = random_hf_llama(seed=4, vocab_size=50, num_attention_heads=4, **kwargs)
    with pytest.raises(ValueError, match=message):
        from_hf(hf)


def test_unknown_model_type_is_refused() -> None:
    fake = types.SimpleNamespace(config=types.SimpleNamespace(model_type="bert"))
    with pytest.raises(
        ValueError, match=r"model_type 'bert': llm-torch imports 'gpt2', 'llama', 'qwen3'"
    ):
        from_hf(fake)


def test_export_of_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match=r"exports GPT and Llama models, not Linear"):
        to_hf(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
