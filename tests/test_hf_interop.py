"""GPT-2 parity with Hugging Face ``transformers``: import, export, save_pretrained round trips."""

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llm_torch.architectures import GPT, GPTConfig  # noqa: E402
from llm_torch.interop import from_hf, to_hf  # noqa: E402

# Different depth/heads/width, vocabularies that are not multiples of 64, n_positions < 1024,
# and one with a non-default MLP width and LayerNorm epsilon.
HF_CONFIGS = [
    {"vocab_size": 1000, "n_positions": 64, "n_embd": 64, "n_layer": 2, "n_head": 4},
    {"vocab_size": 517, "n_positions": 128, "n_embd": 96, "n_layer": 3, "n_head": 6},
    {
        "vocab_size": 3001,
        "n_positions": 48,
        "n_embd": 48,
        "n_layer": 5,
        "n_head": 2,
        "n_inner": 80,
        "layer_norm_epsilon": 1e-6,
    },
]


def random_hf_gpt2(seed: int, **kwargs: int | float) -> "transformers.GPT2LMHeadModel":
    """A randomly initialised GPT-2 built locally, with LayerNorms perturbed off identity."""
    torch.manual_seed(seed)
    # A wide initialisation makes activations large enough that small deviations (exact vs tanh
    # GELU, a wrong epsilon) exceed the 1e-4 tolerance.
    config = transformers.GPT2Config(
        bos_token_id=0, eos_token_id=0, initializer_range=0.2, **kwargs
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # default LayerNorm/bias init is trivial; make every weight matter
        for name, param in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                param.add_(0.5 * torch.randn_like(param))
    return model


def hf_logits(model: "transformers.PreTrainedModel", idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


def ours(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)


@pytest.mark.parametrize("kwargs", HF_CONFIGS)
def test_imported_gpt2_matches_transformers_logits(kwargs: dict[str, int | float]) -> None:
    hf = random_hf_gpt2(seed=len(HF_CONFIGS), **kwargs)
    model = from_hf(hf)
    assert model.config.vocab_size == kwargs["vocab_size"]
    assert model.config.block_size == kwargs["n_positions"]
    assert model.lm_head.weight is model.wte.weight
    idx = torch.randint(0, hf.config.vocab_size, (3, hf.config.n_positions))
    expected = hf_logits(hf, idx)
    assert (ours(model, idx) - expected).abs().max().item() < 1e-4
    # Export the imported model again: still the same function.
    assert (hf_logits(to_hf(model), idx) - expected).abs().max().item() < 1e-4


def test_import_copies_weights_rather_than_sharing_them() -> None:
    hf = random_hf_gpt2(seed=1, **HF_CONFIGS[0])
    model = from_hf(hf)
    with torch.no_grad():
        hf.transformer.wte.weight.zero_()
    assert model.wte.weight.abs().sum() > 0


def test_save_pretrained_directories_round_trip(tmp_path: Path) -> None:
    hf = random_hf_gpt2(seed=2, **HF_CONFIGS[1])
    hf.save_pretrained(tmp_path / "hf")
    model = from_hf(tmp_path / "hf")
    idx = torch.randint(0, 517, (2, 40))
    expected = hf_logits(hf, idx)
    assert (ours(model, idx) - expected).abs().max().item() < 1e-4

    to_hf(model, eos_token_id=0).save_pretrained(tmp_path / "exported")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert isinstance(reloaded, transformers.GPT2LMHeadModel)
    assert reloaded.config.eos_token_id == 0
    assert (hf_logits(reloaded, idx) - expected).abs().max().item() < 1e-4


def test_export_of_a_native_model_with_padded_vocabulary() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = GPT(GPTConfig(**{**config.__dict__, "pad_vocab_size_multiple": 64})).eval()
    hf = to_hf(model)
    assert hf.config.vocab_size == 100
    idx = torch.randint(0, 100, (2, 32))
    assert (hf_logits(hf, idx) - ours(model, idx)).abs().max().item() < 1e-4


def test_unsupported_variants_are_refused_by_name() -> None:
    hf = random_hf_gpt2(seed=3, activation_function="relu", **HF_CONFIGS[0])
    with pytest.raises(ValueError, match=r"activation_function='relu'"):
        from_hf(hf)


def test_bias_free_gpt_exports_with_zero_biases_and_same_logits() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=False)
    model = GPT(config).eval()
    with torch.no_grad():  # move LayerNorm gains off 1 so the norms matter
        for name, param in model.named_parameters():
            if "norm" in name or name.startswith("ln_f"):
                param.add_(0.3 * torch.randn_like(param))
    hf = to_hf(model)
    assert torch.all(hf.transformer.h[0].attn.c_attn.bias == 0)
    idx = torch.randint(0, 50, (2, 16))
    assert (hf_logits(hf, idx) - ours(model, idx)).abs().max().item() < 1e-4


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not a directory.*save_pretrained"):
        from_hf(tmp_path / "nowhere")
