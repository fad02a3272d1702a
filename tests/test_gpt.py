"""GPT-2 architecture: published sizes, initialisation, causality, tying, errors."""

import math

import pytest
import torch

from llm_torch.architectures import GPT, GPTConfig

TINY = GPTConfig(vocab_size=101, block_size=16, n_layer=2, n_head=4, n_embd=32)


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_preset_parameter_counts_match_published_sizes(name: str, published: int) -> None:
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name(name))
    assert model.num_params() == published


def test_non_embedding_count_and_flops_match_nanogpt() -> None:
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name("gpt2"))
    # nanoGPT prints "number of parameters: 123.65M" for GPT-2 small (position table excluded).
    assert model.num_params(exclude_embeddings=True) == 124_439_808 - 1024 * 768
    # 6N + 12 * L * H * Q * T, worked by hand: 6 * 123,653,376 + 12 * 12 * 12 * 64 * 1024.
    assert model.flops_per_token() == 741_920_256 + 113_246_208
    assert model.flops_per_token(seq_len=512) == 741_920_256 + 113_246_208 // 2


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ValueError, match=r"Unknown GPT preset 'gpt3'.*gpt2-xl"):
        GPTConfig.from_name("gpt3")


def test_initialisation_follows_gpt2_scheme() -> None:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=4096, block_size=256, n_layer=8, n_head=8, n_embd=256)
    model = GPT(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name, param in model.named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            assert param.std().item() == pytest.approx(residual_std, rel=0.05), name
        elif name.endswith("bias") or name.startswith("ln_f") or ".norm_" in name:
            expected = 1.0 if name.endswith("weight") else 0.0  # LayerNorm: identity at start
            assert torch.all(param == expected), name
        else:  # embeddings, qkv and MLP input projections
            assert param.mean().item() == pytest.approx(0.0, abs=2e-3), name
            assert param.std().item() == pytest.approx(0.02, rel=0.05), name


def test_head_is_tied_to_token_embedding() -> None:
    model = GPT(TINY)
    assert model.lm_head.weight is model.wte.weight
    # One matrix trained by both uses: token 1 is never embedded, yet its row gets a gradient.
    model(torch.zeros(1, 4, dtype=torch.long))[..., 1].sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad[1].abs().sum() > 0


def test_changing_a_token_never_changes_earlier_logits() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.block_size))
    for t in (0, 5, TINY.block_size - 1):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % TINY.vocab_size
        before, after = model(idx), model(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=0)
        assert not torch.allclose(before[:, t], after[:, t])


def test_sequence_longer_than_block_size_is_a_clear_error() -> None:
    model = GPT(TINY)
    with pytest.raises(
        ValueError, match=r"Sequence length 17 exceeds this model's block_size \(16\)"
    ):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_padded_vocabulary_returns_real_columns_with_same_values() -> None:
    torch.manual_seed(0)
    plain = GPT(TINY).eval()
    padded = GPT(GPTConfig(**{**TINY.__dict__, "pad_vocab_size_multiple": 64})).eval()
    assert padded.wte.weight.shape[0] == 128
    state = plain.state_dict()
    state["wte.weight"] = torch.cat([state["wte.weight"], torch.randn(27, 32)])
    state["lm_head.weight"] = state["wte.weight"]
    padded.load_state_dict(state)
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    logits = padded(idx)
    assert logits.shape == (2, 9, TINY.vocab_size)
    torch.testing.assert_close(logits, plain(idx))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_embd": 30}, r"n_embd \(30\) must be divisible by n_head \(4\)"),
        ({"block_size": 0}, r"block_size must be positive"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_invalid_config_is_rejected(overrides: dict[str, int | float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**TINY.__dict__, **overrides})


def test_meta_construction_then_init_weights_gives_a_tied_initialised_model() -> None:
    with torch.device("meta"):
        model = GPT(TINY)
    model.to_empty(device="cpu")
    model.init_weights()
    assert model.lm_head.weight is model.wte.weight
    assert model.wpe.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert torch.all(model.ln_f.weight == 1.0)
