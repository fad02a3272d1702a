"""Llama architecture: published sizes, FLOPs, initialisation, causality, tying, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from llm_torch.architectures import Llama, LlamaConfig
from llm_torch.components import SwiGLUMLP

TINY = LlamaConfig(vocab_size=101, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)


@pytest.mark.parametrize(
    ("name", "published", "non_embedding"),
    [
        # Untied: the 32000 x 2048 token table is lookup-only, the separate head does compute.
        ("tinyllama-1.1b", 1_100_048_384, 1_100_048_384 - 32000 * 2048),
        # Tied: the one table is also the head, so it stays in the non-embedding count.
        ("llama-3.2-1b", 1_235_814_400, 1_235_814_400),
    ],
)
def test_preset_parameter_counts_match_published_sizes(
    name: str, published: int, non_embedding: int
) -> None:
    with torch.device("meta"):
        model = Llama(LlamaConfig.from_name(name))
    assert model.num_params() == published
    assert model.num_params(exclude_embeddings=True) == non_embedding


def test_preset_shapes_match_transformers_on_meta() -> None:
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(hf_config)
        ours = Llama(LlamaConfig.from_name("tinyllama-1.1b"))
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())


def test_flops_per_token_by_hand() -> None:
    with torch.device("meta"):
        model = Llama(LlamaConfig.from_name("tinyllama-1.1b"))
    # 6N + 12 * L * H * Q * T: 6 * 1,034,512,384 + 12 * 22 * 32 * 64 * 2048.
    assert model.flops_per_token() == 6_207_074_304 + 1_107_296_256
    assert model.flops_per_token(seq_len=1024) == 6_207_074_304 + 1_107_296_256 // 2


def test_presets_and_derived_fields() -> None:
    config = LlamaConfig.from_name("llama-3.2-1b")
    assert config.resolved_head_dim == 64 and config.resolved_n_kv_head == 8
    assert config.rope_scaling is not None and config.rope_scaling["factor"] == 32.0
    assert config.tie_embeddings
    assert not LlamaConfig.from_name("tinyllama-1.1b").tie_embeddings
    # Meta's SwiGLU width rule: Llama 2 7B has 11008 for 4096 wide.
    assert LlamaConfig(n_embd=4096, n_head=32).resolved_mlp_hidden == 11008
    assert LlamaConfig(n_embd=128, n_head=4).resolved_n_kv_head == 4
    # An override of the width re-derives head_dim rather than keeping the preset's.
    assert LlamaConfig.from_name("llama-nano", n_embd=256).resolved_head_dim == 64
    # Presets are copied: mutating one config leaves the preset alone.
    mutated = LlamaConfig.from_name("llama-3.2-1b")
    assert mutated.rope_scaling is not None
    mutated.rope_scaling["factor"] = 1.0
    assert LlamaConfig.from_name("llama-3.2-1b").rope_scaling == config.rope_scaling


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ValueError, match=r"Unknown Llama preset 'llama-9'.*tinyllama-1.1b"):
        LlamaConfig.from_name("llama-9")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_kv_head": 3}, r"n_kv_head \(3\) must divide n_head \(4\)"),
        ({"n_embd": 30}, r"n_embd \(30\) must be divisible by n_head \(4\), or set head_dim"),
        ({"head_dim": 7}, r"head dimension \(7\) must be even"),
        ({"block_size": 0}, r"block_size must be positive"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, r"rope_type='linear'"),
        ({"rope_theta": 0.0}, r"rope_theta must be positive"),
    ],
)
def test_invalid_config_is_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LlamaConfig(**{**TINY.__dict__, **overrides})


def test_initialisation_scheme() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=4096, block_size=64, n_layer=8, n_head=8, n_embd=256)
    model = Llama(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name, param in model.named_parameters():
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            assert param.std().item() == pytest.approx(residual_std, rel=0.05), name
        elif name.startswith("ln_f") or ".norm_" in name:
            assert torch.all(param == 1.0), name  # RMSNorm: identity at start
        else:  # embeddings, head, qkv and gate/up projections
            assert param.mean().item() == pytest.approx(0.0, abs=2e-3), name
            assert param.std().item() == pytest.approx(0.02, rel=0.05), name
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


def test_tied_and_untied_heads() -> None:
    tied = Llama(LlamaConfig(**{**TINY.__dict__, "tie_embeddings": True}))
    assert tied.lm_head.weight is tied.wte.weight
    untied = Llama(TINY)
    assert untied.lm_head.weight is not untied.wte.weight
    # Token 1 is never embedded: its embedding row learns only through a tied head.
    for model in (tied, untied):
        model(torch.zeros(1, 4, dtype=torch.long))[..., 1].sum().backward()
    assert tied.wte.weight.grad is not None and tied.wte.weight.grad[1].abs().sum() > 0
    assert untied.wte.weight.grad is not None and torch.all(untied.wte.weight.grad[1] == 0)
    assert untied.num_params() - tied.num_params() == 101 * 32
    assert untied.num_params(exclude_embeddings=True) == tied.num_params(exclude_embeddings=True)


def test_grouped_query_attention_shapes_and_custom_head_dim() -> None:
    model = Llama(LlamaConfig(**{**TINY.__dict__, "head_dim": 12, "n_kv_head": 1}))
    attn = model.blocks[0].attn
    assert attn.qkv.weight.shape == ((4 + 2 * 1) * 12, 32)
    assert attn.proj.weight.shape == (32, 4 * 12)
    assert model.rope.cos.shape == (16, 12)
    assert model(torch.zeros(1, 5, dtype=torch.long)).shape == (1, 5, 101)


def test_changing_a_token_never_changes_earlier_logits() -> None:
    torch.manual_seed(0)
    model = Llama(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.block_size))
    for t in (0, 5, TINY.block_size - 1):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % TINY.vocab_size
        before, after = model(idx), model(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t], rtol=0, atol=0)
        assert not torch.allclose(before[:, t], after[:, t])


def test_sequence_longer_than_block_size_is_a_clear_error() -> None:
    model = Llama(TINY)
    with pytest.raises(
        ValueError, match=r"Sequence length 17 exceeds this model's block_size \(16\)"
    ):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_padded_vocabulary_returns_real_columns_with_same_values() -> None:
    torch.manual_seed(0)
    plain = Llama(TINY).eval()
    padded = Llama(LlamaConfig(**{**TINY.__dict__, "pad_vocab_size_multiple": 64})).eval()
    assert padded.wte.weight.shape[0] == 128
    state = plain.state_dict()
    state["wte.weight"] = torch.cat([state["wte.weight"], torch.randn(27, 32)])
    state["lm_head.weight"] = torch.cat([state["lm_head.weight"], torch.randn(27, 32)])
    padded.load_state_dict(state)
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    logits = padded(idx)
    assert logits.shape == (2, 9, TINY.vocab_size)
    torch.testing.assert_close(logits, plain(idx))


def test_swiglu_matches_written_out_formula() -> None:
    torch.manual_seed(0)
    mlp = SwiGLUMLP(n_embd=16, hidden=24)
    x = torch.randn(3, 5, 16)
    gate, up = mlp.fc.weight[:24], mlp.fc.weight[24:]
    expected = (F.silu(x @ gate.T) * (x @ up.T)) @ mlp.proj.weight.T
    torch.testing.assert_close(mlp(x), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_rmsnorm_matches_transformers_llama_rmsnorm(dtype: torch.dtype) -> None:
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    ours, theirs = torch.nn.RMSNorm(96, eps=1e-5), LlamaRMSNorm(96, eps=1e-5)
    with torch.no_grad():
        ours.weight.copy_(1 + 0.5 * torch.randn(96))
        theirs.weight.copy_(ours.weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (3 * torch.randn(4, 33, 96)).to(dtype)
    if dtype == torch.float32:  # the same float32 computation, bit for bit
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    else:  # torch rounds once, HF twice (normalised x, then times weight): within one bf16 ulp
        torch.testing.assert_close(ours(x), theirs(x), rtol=2**-7, atol=1e-2)
