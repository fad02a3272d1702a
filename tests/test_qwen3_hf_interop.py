"""Qwen 3 parity: a Llama with QK-norm exports as ``transformers.Qwen3ForCausalLM`` and back.

The reference is ``transformers``' own Qwen 3 (eager attention, so it does not share llm-torch's
SDPA kernel): its logits on the exported folder, and on folders it wrote itself.
"""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import REPO, tiny_args, tiny_model_args, write_corpus
from safetensors import safe_open
from torch import nn

transformers = pytest.importorskip("transformers")

from llm_torch.architectures import Llama, LlamaConfig  # noqa: E402
from llm_torch.cli import cli  # noqa: E402
from llm_torch.engine.checkpoint import load_checkpoint  # noqa: E402
from llm_torch.engine.module import CausalLMModule  # noqa: E402
from llm_torch.interop import from_hf, to_hf  # noqa: E402
from llm_torch.interop.command import export_command  # noqa: E402

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}

# GQA untied and tied, MQA; vocabularies that are not multiples of 64 (one padded); head_dim
# different from n_embd / n_head; Qwen 3's own rope_theta (1e6) and epsilon; llama3 scaling.
NATIVE: dict[str, dict[str, Any]] = {
    "gqa-untied": {"vocab_size": 101, "n_head": 4, "n_kv_head": 2, "tie_embeddings": False},
    "gqa-tied-padded": {
        "vocab_size": 77,
        "n_head": 4,
        "n_kv_head": 2,
        "tie_embeddings": True,
        "head_dim": 12,
        "rope_theta": 1_000_000.0,
        "norm_eps": 1e-6,
        "pad_vocab_size_multiple": 64,
    },
    "mqa-untied-llama3": {
        "vocab_size": 59,
        "n_head": 4,
        "n_kv_head": 1,
        "tie_embeddings": False,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3,
    },
}


def native_qwen3(**options: Any) -> Llama:
    """A random Llama with QK-norm, weights scaled and norms moved off one so errors would show."""
    torch.manual_seed(0)
    config = LlamaConfig(
        block_size=48, n_layer=2, n_embd=32, mlp_hidden=40, qk_norm=True, **copy.deepcopy(options)
    )
    model = Llama(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.RMSNorm):
                assert module.weight is not None
                module.weight.uniform_(0.5, 1.5)
            elif isinstance(module, nn.Linear | nn.Embedding):
                module.weight.mul_(8)
    return model


def random_hf_qwen3(seed: int, **kwargs: Any) -> "transformers.Qwen3ForCausalLM":
    """A Qwen3ForCausalLM built by transformers itself, wide init, norms (QK ones too) perturbed."""
    torch.manual_seed(seed)
    defaults = {
        "vocab_size": 211,
        "hidden_size": 48,
        "intermediate_size": 72,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 64,
        "initializer_range": 0.2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
    }
    config = transformers.Qwen3Config(**copy.deepcopy({**defaults, **kwargs}))
    config._attn_implementation = "eager"
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.5 * torch.randn_like(param))
    return model


def load_hf(folder: Path) -> "transformers.PreTrainedModel":
    """``AutoModelForCausalLM`` on a folder, eager attention: the independent reference."""
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager"
    ).eval()


def hf_logits(model: "transformers.PreTrainedModel", idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


def ours(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(idx)
        return logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(NATIVE))
def test_export_writes_a_qwen3_folder_with_the_same_logits(name: str, tmp_path: Path) -> None:
    options = NATIVE[name]
    model = native_qwen3(**options)
    cfg = model.config
    to_hf(model, eos_token_id=1).save_pretrained(tmp_path)

    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "qwen3"
    assert written["architectures"] == ["Qwen3ForCausalLM"]
    assert written["vocab_size"] == options["vocab_size"]  # padding rows dropped
    assert written["hidden_size"] == 32 and written["intermediate_size"] == 40
    assert written["num_hidden_layers"] == 2
    assert written["num_attention_heads"] == 4
    assert written["num_key_value_heads"] == options["n_kv_head"]
    assert written["head_dim"] == options.get("head_dim", 32 // 4)
    assert written["max_position_embeddings"] == 48
    assert written["rms_norm_eps"] == options.get("norm_eps", 1e-5)
    assert written["rope_parameters"]["rope_theta"] == options.get("rope_theta", 10000.0)
    rope_type = options.get("rope_scaling", {}).get("rope_type", "default")
    assert written["rope_parameters"]["rope_type"] == rope_type
    assert written["tie_word_embeddings"] == options["tie_embeddings"]
    assert written["attention_bias"] is False and written["use_sliding_window"] is False
    assert written["sliding_window"] is None
    assert written["layer_types"] == ["full_attention", "full_attention"]
    assert (written["eos_token_id"], written["bos_token_id"]) == (1, None)
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    assert "model.layers.1.self_attn.q_norm.weight" in names
    assert "model.layers.1.self_attn.k_norm.weight" in names

    hf = load_hf(tmp_path)
    assert isinstance(hf, transformers.Qwen3ForCausalLM)
    idx = torch.randint(
        0, options["vocab_size"], (2, 48), generator=torch.Generator().manual_seed(1)
    )
    expected = ours(model, idx)
    assert expected.abs().max() > 1.0  # large logits: a small relative error would show
    assert max_diff(hf_logits(hf, idx), expected) < 1e-4

    # Import the folder back: the same architecture, weights and logits, exactly.
    back = from_hf(tmp_path)
    assert isinstance(back, Llama) and back.config.qk_norm
    same = ("n_head", "resolved_n_kv_head", "resolved_head_dim", "resolved_mlp_hidden")
    for field in (*same, "n_layer", "n_embd", "block_size", "norm_eps", "rope_theta"):
        assert getattr(back.config, field) == getattr(cfg, field), field
    assert back.config.rope_scaling == cfg.rope_scaling
    assert back.config.tie_embeddings == cfg.tie_embeddings
    assert (back.lm_head.weight is back.wte.weight) == cfg.tie_embeddings
    theirs = back.state_dict()
    for key, tensor in model.state_dict().items():
        if key in ("wte.weight", "lm_head.weight"):
            tensor = tensor[: cfg.vocab_size]
        assert torch.equal(theirs[key], tensor), key
    torch.testing.assert_close(ours(back, idx), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"tie_word_embeddings": True}, {"rope_theta": 500000.0, "rope_scaling": LLAMA3}],
    ids=["untied", "tied", "llama3-rope"],
)
def test_folder_written_by_transformers_imports_with_equal_logits(
    kwargs: dict[str, Any], tmp_path: Path
) -> None:
    hf = random_hf_qwen3(seed=len(kwargs), **kwargs)
    hf.save_pretrained(tmp_path)
    model = from_hf(tmp_path)
    assert isinstance(model, Llama)
    cfg = model.config
    assert cfg.qk_norm and (cfg.n_head, cfg.resolved_n_kv_head, cfg.resolved_head_dim) == (4, 2, 16)
    assert cfg.tie_embeddings == kwargs.get("tie_word_embeddings", False)
    assert cfg.rope_scaling == kwargs.get("rope_scaling")
    idx = torch.randint(0, 211, (2, 64), generator=torch.Generator().manual_seed(2))
    expected = hf_logits(hf, idx)
    assert expected.abs().max() > 1.0
    assert max_diff(ours(model, idx), expected) < 1e-4


def test_init_from_a_qwen3_folder_loads_its_weights(tmp_path: Path) -> None:
    hf = random_hf_qwen3(seed=3)
    hf.save_pretrained(tmp_path / "hf")
    arch = {
        "vocab_size": 211,
        "block_size": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_kv_head": 2,
        "n_embd": 48,
        "mlp_hidden": 72,
        "head_dim": 16,
        "norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "tie_embeddings": False,
    }
    module = CausalLMModule(LlamaConfig(**arch, qk_norm=True), init_from=str(tmp_path / "hf"))
    module.configure_model()
    idx = torch.randint(0, 211, (2, 64), generator=torch.Generator().manual_seed(4))
    assert max_diff(ours(module.model.eval(), idx), hf_logits(hf, idx)) < 1e-4

    plain = CausalLMModule(LlamaConfig(**arch), init_from=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"different model .*qk_norm: checkpoint True vs config"):
        plain.configure_model()


def test_export_command_writes_a_trained_qk_norm_llama_as_qwen3(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = [
        *tiny_args(tmp_path, corpus, steps=1),
        *tiny_model_args("llama"),
        "--model.arch.init_args.qk_norm=true",
    ]
    cli(["fit", f"--config={REPO / 'configs' / 'llama-nano.yaml'}", *args])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    export_command([f"--ckpt_path={ckpt}", f"--out={tmp_path / 'hf'}"])
    hf = load_hf(tmp_path / "hf")
    assert isinstance(hf, transformers.Qwen3ForCausalLM)
    model, tokenizer = load_checkpoint(ckpt)
    assert tokenizer is not None and hf.config.eos_token_id == tokenizer.eot_id
    idx = torch.randint(
        0, tokenizer.vocab_size, (2, 32), generator=torch.Generator().manual_seed(5)
    )
    assert max_diff(hf_logits(hf, idx), ours(model, idx)) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
            r"Qwen 3 checkpoint: its config has layer_types=\['full_attention', "
            r"'sliding_attention'\].*supports only layer_types=\['full_attention'\]",
        ),
        ({"attention_bias": True}, r"Qwen 3 checkpoint: .*attention_bias=True"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu'"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, r"rope_type='linear'"),
    ],
    ids=["sliding-window", "attention-bias", "gelu", "linear-rope"],
)
def test_qwen3_variants_llm_torch_cannot_compute_are_refused_by_name(
    kwargs: dict[str, Any], message: str
) -> None:
    hf = random_hf_qwen3(seed=5, **kwargs)
    with pytest.raises(ValueError, match=message):
        from_hf(hf)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mlp_activation": "relu2"}, r"mlp_activation='relu2'.*mlp_activation='swiglu'"),
        ({"logit_softcap": 15.0}, r"logit_softcap=15\.0.*logit_softcap=None"),
    ],
    ids=["relu2", "softcap"],
)
def test_qk_norm_llama_with_another_recipe_option_is_refused_naming_it(
    options: dict[str, Any], message: str
) -> None:
    model = native_qwen3(vocab_size=50, n_head=4, n_kv_head=2, **options)
    with pytest.raises(
        ValueError, match=rf"Cannot export this model to transformers' Qwen 3: .*{message}"
    ):
        to_hf(model)
