"""Shared components against hand-written references."""

import pytest
import torch

from llm_torch.components import CausalSelfAttention, LearnedPositionEmbedding


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention spelled out: repeat key/value heads, mask the future, softmax, mix."""
    groups = q.size(1) // k.size(1)
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)) / q.size(-1) ** 0.5
    future = torch.ones(q.size(2), q.size(2), dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_attention_matches_reference_for_mha_gqa_mqa(n_kv_head: int) -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(n_embd=32, n_head=4, n_kv_head=n_kv_head).eval()
    assert attn.qkv.out_features == (4 + 2 * n_kv_head) * 8
    x = torch.randn(2, 7, 32)
    q, k, v = attn.project_qkv(x)
    assert k.shape == (2, n_kv_head, 7, 8)
    expected = attn.proj(reference_attention(q, k, v).transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_attention_positional_hook_sees_queries_and_keys_only() -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=2, n_kv_head=1).eval()
    seen: list[tuple[int, ...]] = []

    def double_queries(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.extend([tuple(q.shape), tuple(k.shape)])
        return 2 * q, k

    x = torch.randn(1, 5, 16)
    q, k, v = attn.project_qkv(x)
    expected = attn.proj(reference_attention(2 * q, k, v).transpose(1, 2).reshape(1, 5, 16))
    torch.testing.assert_close(attn(x, double_queries), expected, atol=1e-5, rtol=1e-5)
    assert seen == [(1, 2, 5, 8), (1, 1, 5, 8)]


def test_attention_rejects_head_counts_that_do_not_group() -> None:
    with pytest.raises(ValueError, match=r"n_kv_head \(3\) must divide n_head \(4\)"):
        CausalSelfAttention(n_embd=32, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        CausalSelfAttention(n_embd=30, n_head=4)


def test_position_embedding_offset_selects_later_rows() -> None:
    emb = LearnedPositionEmbedding(block_size=8, n_embd=4)
    torch.testing.assert_close(emb(3, offset=2), emb.weight[2:5])
    assert emb(8).shape == (8, 4)
