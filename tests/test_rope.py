"""Rotary position embeddings against complex-number rotation and ``transformers``' frequencies."""

import math
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llm_torch.architectures import Llama, LlamaConfig
from llm_torch.components import CausalSelfAttention, KVCache, RotaryEmbedding, rope_tables
from llm_torch.components.rope import rope_inverse_frequencies

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


def complex_rotation(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE spelled out: pair ``(x_i, x_{i+d/2})`` is a complex number turned by ``t * w_i``."""
    seq_len, dim = x.shape[-2], x.shape[-1]
    freqs = torch.tensor([theta ** (-2 * i / dim) for i in range(dim // 2)], dtype=torch.float64)
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * freqs
    z = torch.complex(x[..., : dim // 2].double(), x[..., dim // 2 :].double())
    turned = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([turned.real, turned.imag], dim=-1).float()


def test_rotation_matches_complex_number_reference() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=16, max_seq_len=40, theta=500.0)
    q, k = torch.randn(2, 4, 40, 16), torch.randn(2, 1, 40, 16)
    q_rot, k_rot = rope(q, k)
    torch.testing.assert_close(q_rot, complex_rotation(q, 500.0), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(k_rot, complex_rotation(k, 500.0), atol=2e-5, rtol=1e-5)
    # Rotations preserve norms and leave position 0 alone.
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(q_rot[:, :, 0], q[:, :, 0])


def test_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_seq_len=64)
    q, k = torch.randn(8), torch.randn(8)

    def score(q_pos: int, k_pos: int) -> float:
        qs = torch.zeros(1, 1, 64, 8).index_copy(2, torch.tensor([q_pos]), q.view(1, 1, 1, 8))
        ks = torch.zeros(1, 1, 64, 8).index_copy(2, torch.tensor([k_pos]), k.view(1, 1, 1, 8))
        q_rot, k_rot = rope(qs, ks)
        return float(q_rot[0, 0, q_pos] @ k_rot[0, 0, k_pos])

    assert score(9, 4) == pytest.approx(score(50, 45), abs=1e-4)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-3)


def test_inverse_frequencies_match_transformers_with_and_without_llama3_scaling() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=2,  # head_dim 32: 16 frequencies span all three llama3 bands
        max_position_embeddings=256,
        rope_theta=10000.0,
        rope_scaling=dict(LLAMA3_SCALING),
    )
    expected, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](hf_config)
    assert attention_factor == 1.0
    ours = rope_inverse_frequencies(32, 10000.0, LLAMA3_SCALING)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    plain = rope_inverse_frequencies(32, 10000.0)
    torch.testing.assert_close(plain, 10000.0 ** (-torch.arange(0, 32, 2) / 32.0))
    # The three bands: fast rotations kept, slow ones divided by `factor`, the middle blended.
    wavelength = 2 * math.pi / plain
    fast, slow = wavelength < 32 / 4, wavelength > 32 / 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    torch.testing.assert_close(ours[fast], plain[fast], rtol=0, atol=0)
    torch.testing.assert_close(ours[slow], plain[slow] / 4, rtol=0, atol=0)
    middle = ~fast & ~slow
    assert torch.all((ours[middle] < plain[middle]) & (ours[middle] > plain[middle] / 4))


def test_hook_rotates_queries_and_keys_but_not_values() -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(n_embd=32, n_head=4, n_kv_head=2, bias=False).eval()
    rope = RotaryEmbedding(head_dim=8, max_seq_len=16)
    x = torch.randn(2, 11, 32)
    q, k, v = attn.project_qkv(x)
    cos, sin = rope_tables(8, 11, 10000.0)

    def turn(t: torch.Tensor) -> torch.Tensor:  # rotate_half layout written out by hand
        return t * cos + torch.cat([-t[..., 4:], t[..., :4]], dim=-1) * sin

    k_all, v_all = turn(k).repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (turn(q) @ k_all.transpose(-2, -1)) / math.sqrt(8)
    future = torch.ones(11, 11, dtype=torch.bool).triu(1)
    mixed = scores.masked_fill(future, float("-inf")).softmax(-1) @ v_all  # values not rotated
    expected = attn.proj(mixed.transpose(1, 2).reshape(2, 11, 32))
    torch.testing.assert_close(attn(x, rope), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(attn(x, rope), attn(x), atol=1e-3)


def test_offset_selects_later_positions() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=8, max_seq_len=16)
    q = torch.randn(1, 1, 16, 8)
    full, _ = rope(q, q)
    tail, _ = rope(q[:, :, 10:], q[:, :, 10:], offset=10)
    torch.testing.assert_close(tail, full[:, :, 10:])
    with pytest.raises(ValueError, match=r"cover 16 positions, but position 16 was requested"):
        rope(q[:, :, :7], q[:, :, :7], offset=10)


def test_tables_are_nonpersistent_float32_buffers_computed_once() -> None:
    model = Llama(LlamaConfig.from_name("llama-nano", vocab_size=50, block_size=32)).eval()
    cos, sin = model.rope.cos, model.rope.sin
    pointer = cos.data_ptr()
    built_cos, built_sin = cos.clone(), sin.clone()
    assert cos.dtype == torch.float32 and cos.shape == (32, 32)
    assert not any(name.startswith("rope") for name in model.state_dict())
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, 50, (2, 32)))
    # Forward passes reuse the tables: the same tensors, storage and values as at construction.
    assert model.rope.cos is cos and model.rope.sin is sin and cos.data_ptr() == pointer
    torch.testing.assert_close(cos, built_cos, rtol=0, atol=0)
    torch.testing.assert_close(sin, built_sin, rtol=0, atol=0)


def test_meta_init_then_to_empty_rebuilds_tables() -> None:
    config = LlamaConfig.from_name(
        "llama-nano", vocab_size=50, block_size=128, rope_scaling=LLAMA3_SCALING
    )
    with torch.device("meta"):
        model = Llama(config)
    assert model.rope.cos.is_meta
    model.to_empty(device="cpu")
    model.init_weights()
    expected_cos, expected_sin = rope_tables(32, 128, 10000.0, LLAMA3_SCALING)
    torch.testing.assert_close(model.rope.cos, expected_cos, rtol=0, atol=0)
    torch.testing.assert_close(model.rope.sin, expected_sin, rtol=0, atol=0)
    assert model.lm_head.weight is model.wte.weight  # tying survives to_empty
    assert torch.isfinite(model(torch.randint(0, 50, (1, 128)))).all()


def test_tables_follow_the_model_dtype() -> None:
    model = Llama(LlamaConfig.from_name("llama-nano", vocab_size=50, block_size=32))
    model.to(torch.bfloat16)
    assert model.rope.cos.dtype == torch.bfloat16
    assert model(torch.randint(0, 50, (1, 32))).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({**LLAMA3_SCALING, "rope_type": "yarn"}, r"rope_type='yarn'; only 'llama3'"),
        ({"rope_type": "llama3", "factor": 8.0}, r"missing \['high_freq_factor', 'low_freq"),
        ({**LLAMA3_SCALING, "factr": 2}, r"unknown \['factr'\]"),
        ({**LLAMA3_SCALING, "high_freq_factor": 1.0}, r"low_freq_factor < high_freq_factor"),
    ],
)
def test_bad_scaling_is_refused_by_name(scaling: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RotaryEmbedding(head_dim=8, max_seq_len=8, scaling=scaling)


def test_odd_head_dim_is_refused() -> None:
    with pytest.raises(ValueError, match=r"even, positive head_dim, got 7"):
        RotaryEmbedding(head_dim=7, max_seq_len=8)


class TableReads(TorchDispatchMode):
    """Counts the ops that read a RoPE table directly (a slice or a gather of it)."""

    def __init__(self, tables: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.tables = tables
        self.count = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Any = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if args and any(args[0] is table for table in self.tables):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("padded", [False, True])
def test_tables_are_sliced_once_per_forward_pass_not_once_per_layer(padded: bool) -> None:
    model = Llama(LlamaConfig.from_name("llama-nano", vocab_size=50, block_size=32)).eval()
    assert model.config.n_layer == 4
    idx = torch.randint(0, 50, (2, 12))
    cache = KVCache(pad=torch.tensor([0, 5])) if padded else None
    with torch.no_grad(), TableReads((model.rope.cos, model.rope.sin)) as reads:
        logits = model(idx, cache=cache)
    assert reads.count == 2  # cos and sin, shared by the 4 layers
    alone = model(idx[1:, 5:]) if padded else model(idx)  # and the rotation is still right
    torch.testing.assert_close(logits[-1:, -alone.size(1) :], alone[-1:], atol=1e-5, rtol=1e-5)
