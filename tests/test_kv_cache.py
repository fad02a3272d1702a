"""KV cache: in-place buffers, cached logits equal to the full forward, untouched training path."""

import pytest
import torch

from llm_torch.architectures import GPT, GPTConfig, Llama, LlamaConfig
from llm_torch.components import KVCache, LayerCache
from llm_torch.generation import new_cache

VOCAB = 97


# Tiny models gain nothing from more threads; see conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")


MODELS = {
    "gpt": lambda: GPT(GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32)),
    "llama-gqa": lambda: Llama(
        LlamaConfig(
            vocab_size=VOCAB,
            block_size=32,
            n_layer=2,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            mlp_hidden=48,
        )
    ),
    "llama-mqa-head-dim": lambda: Llama(
        LlamaConfig(
            vocab_size=VOCAB,
            block_size=32,
            n_layer=2,
            n_head=4,
            n_kv_head=1,
            n_embd=32,
            head_dim=12,
            mlp_hidden=48,
        )
    ),
}


def tiny(name: str) -> GPT | Llama:
    torch.manual_seed(0)
    return MODELS[name]().eval()


def test_update_writes_in_place_and_returns_prefix_views() -> None:
    cache = LayerCache(batch_size=3, n_kv_head=2, max_len=10, head_dim=4)
    k, v = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    keys, values = cache.update(k, v, input_pos=0)  # a batch of 2 uses the first 2 rows
    assert keys.shape == (2, 2, 6, 4)
    assert keys.data_ptr() == cache.k.data_ptr() and values.data_ptr() == cache.v.data_ptr()
    k2, v2 = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    keys, values = cache.update(k2, v2, input_pos=6)
    assert keys.data_ptr() == cache.k.data_ptr()  # no reallocation
    torch.testing.assert_close(keys, torch.cat([k, k2], dim=2), rtol=0, atol=0)
    torch.testing.assert_close(values, torch.cat([v, v2], dim=2), rtol=0, atol=0)
    assert cache.k[2].abs().sum() == 0 and cache.k[:, :, 7:].abs().sum() == 0


def test_a_tensor_position_writes_the_same_slots_and_returns_the_whole_buffer() -> None:
    static = LayerCache(batch_size=2, n_kv_head=2, max_len=10, head_dim=4)
    dynamic = LayerCache(batch_size=2, n_kv_head=2, max_len=10, head_dim=4)
    k, v = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    static.update(k, v, input_pos=0)
    dynamic.update(k, v, input_pos=0)
    k2, v2 = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    keys, values = static.update(k2, v2, input_pos=torch.tensor(6))
    dynamic_keys, dynamic_values = dynamic.update(k2, v2, input_pos=6)
    assert keys.shape == (2, 2, 10, 4) and keys.data_ptr() == static.k.data_ptr()  # same shape
    torch.testing.assert_close(keys[:, :, :7], dynamic_keys, rtol=0, atol=0)  # every step
    torch.testing.assert_close(values[:, :, :7], dynamic_values, rtol=0, atol=0)
    assert keys[:, :, 7:].abs().sum() == 0


def test_update_overflow_and_oversized_batch_are_named() -> None:
    cache = LayerCache(batch_size=1, n_kv_head=1, max_len=8, head_dim=4)
    cache.update(torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4), input_pos=0)
    with pytest.raises(ValueError, match=r"KV cache overflow: positions 6\.\.8 .* holds 8"):
        cache.update(torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), input_pos=6)
    with pytest.raises(ValueError, match=r"Batch of 2 .* set up for 1"):
        cache.update(torch.randn(2, 1, 1, 4), torch.randn(2, 1, 1, 4), input_pos=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_cache_holds_only_kv_heads_in_model_dtype_and_leaves_checkpoints_alone(name: str) -> None:
    model = tiny(name).to(torch.float64)
    keys_before = set(model.state_dict())
    cache = new_cache(model, batch_size=3, max_len=20)
    cfg = model.config
    n_kv = cfg.resolved_n_kv_head if isinstance(cfg, LlamaConfig) else cfg.n_head
    head_dim = cfg.resolved_head_dim
    found = cache.layers
    assert len(found) == cfg.n_layer
    for layer in found:
        assert layer.k.shape == layer.v.shape == (3, n_kv, 20, head_dim)
        assert layer.k.dtype == torch.float64
    assert set(model.state_dict()) == keys_before  # never in a checkpoint
    assert model.kv_cache is None  # the caller's, not the model's


@pytest.mark.parametrize("name", list(MODELS))
def test_cached_prefill_decode_and_chunks_match_full_forward(name: str) -> None:
    model = tiny(name)
    idx = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        expected = model(idx)
        cache = new_cache(model, batch_size=2, max_len=24)
        pieces = [model(idx[:, :7], cache=cache)]  # prefill: causal over the prompt
        pieces += [model(idx[:, t : t + 1], cache=cache.seek(t)) for t in range(7, 12)]  # decode
        pieces.append(model(idx[:, 12:17], cache=cache.seek(12)))  # chunk: explicit causal band
        pieces.append(model(idx[:, 17:24], cache=cache.seek(17)))
    torch.testing.assert_close(torch.cat(pieces, dim=1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_training_forward_ignores_a_set_up_cache(name: str) -> None:
    model = tiny(name)
    idx = torch.randint(0, VOCAB, (2, 32))
    with torch.no_grad():
        expected = model(idx)
        model.kv_cache = new_cache(model, batch_size=2)  # as generate leaves it
        torch.testing.assert_close(model(idx), expected, rtol=0, atol=0)
    assert all(layer.k.abs().sum() == 0 for layer in model.kv_cache.layers)  # not read or written


def test_cache_errors_name_the_problem_and_the_fix() -> None:
    model = tiny("llama-gqa")
    idx = torch.randint(0, VOCAB, (1, 6))
    with pytest.raises(ValueError, match=r"has no buffers, so it only runs whole sequences"):
        model(idx, cache=KVCache().seek(1))
    with pytest.raises(ValueError, match=r"max_len must be in 1\.\.block_size \(32\), got 33"):
        new_cache(model, batch_size=1, max_len=33)
    cache = new_cache(model, batch_size=1, max_len=8)
    model(idx, cache=cache)
    with pytest.raises(ValueError, match=r"KV cache overflow: positions 6\.\.8"):
        model(idx[:, :3], cache=cache.seek(6))
    with pytest.raises(ValueError, match=r"KV cache overflow: positions 8\.\.8 .* holds 8"):
        model(idx[:, :1], cache=cache.seek(8, static=True))  # static: checked on the host
    with pytest.raises(ValueError, match=r"Positions 30\.\.35 exceed this model's block_size"):
        model(idx, cache=cache.seek(30))


def test_decoding_by_hand_leaves_nothing_on_the_model_even_after_an_error() -> None:
    model = tiny("gpt")
    keys = set(model.state_dict())
    cache = new_cache(model, batch_size=1)
    with pytest.raises(KeyError), torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache=cache)
        raise KeyError
    assert model.kv_cache is None and set(model.state_dict()) == keys
    assert cache.layers[0].k[0, :, :3].abs().sum() > 0  # the keys went to the caller's cache
