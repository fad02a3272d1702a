"""A third architecture is a config subclass plus the blocks it composes.

``Tiny`` has no position encoding at all (NoPE), RMSNorms and a bias-free GELU MLP. Everything
else (forward, loss, init, KV cache, parameter count, FLOPs, checkpoints' plain-data config)
comes from ``DecoderConfig`` and ``DecoderLM``.
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from llm_torch.architectures import DecoderConfig, DecoderLM, registry
from llm_torch.components import MLP, CausalSelfAttention, Context, TransformerBlock
from llm_torch.generation import generate

# --- The whole architecture ---------------------------------------------------------------------


@dataclass
class TinyConfig(DecoderConfig):
    """A NoPE decoder: no position encoding, RMSNorm, GELU MLP without biases."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
    }


class Tiny(DecoderLM):
    """Token embeddings, pre-RMSNorm blocks, a tied head."""

    config: TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                attn=CausalSelfAttention(config.n_embd, config.n_head, bias=False),
                mlp=MLP(config.n_embd, 4 * config.n_embd, bias=False),
                norm_1=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
                norm_2=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
            )
            for _ in range(config.n_layer)
        )
        self.ln_f = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.init_weights()

    def hidden_states(self, idx: Tensor, ctx: Context) -> Tensor:
        """Embeddings, then the blocks; attention alone orders the tokens (no ``positions``)."""
        x = self.wte(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, kv=ctx.layer(i), attn_mask=ctx.mask)
        return x


# --- What it gets for free -----------------------------------------------------------------------


def _model(**overrides: Any) -> Tiny:
    torch.manual_seed(0)
    return Tiny(TinyConfig.from_name("tiny", **overrides)).eval()


def test_loss_of_a_uniform_head_is_log_of_the_real_vocabulary() -> None:
    model = _model(pad_vocab_size_multiple=64)  # 50 real columns, 14 masked padding columns
    idx, targets = torch.randint(0, 50, (2, 2, 16))
    assert model(idx).shape == (2, 16, 50)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: uniform over the real tokens only
    assert model(idx, targets=targets).item() == pytest.approx(math.log(50), abs=1e-6)


def test_kv_cache_decoding_equals_full_recomputation() -> None:
    model = _model()
    prompt = torch.randint(0, 50, (1, 5))
    cached = generate(model, prompt, 8, temperature=0.0, use_cache=True)
    recomputed = generate(model, prompt, 8, temperature=0.0, use_cache=False)
    assert cached == recomputed and len(cached[0]) == 5 + 8


def test_size_and_flops_follow_the_shared_conventions() -> None:
    model = _model()
    per_block = 4 * 32 * 32 + 2 * 4 * 32 * 32 + 2 * 32  # qkv + proj, MLP, two norms
    total = 50 * 32 + 2 * per_block + 32  # tied table, blocks, final norm; no positions
    assert model.num_params() == model.num_params(exclude_embeddings=True) == total
    assert model.flops_per_token(16) == 6 * total + 12 * 2 * 2 * 16 * 16
    assert model.lm_head.weight is model.wte.weight


def test_registered_it_round_trips_through_checkpoint_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.ARCHITECTURES, "tiny", (TinyConfig, Tiny))
    config = TinyConfig.from_name("tiny", n_layer=1)
    data = registry.config_to_dict(config)
    assert data["arch"] == "tiny" and data["n_layer"] == 1
    assert registry.config_from_dict(data) == config
    assert isinstance(registry.build_model(config), Tiny)
