"""generate(): cache and transformers parity, sampling filters, seeds, EOS, streaming, errors."""

import math
from typing import Any

import pytest
import torch
from generation_helpers import VOCAB, greedy_reference, tiny

from llm_torch.generation import generate, sample_next

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11, 12, 13], [14]]


# Tiny models gain nothing from more threads; see conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")


def count_forwards(model: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    model.register_forward_hook(lambda *args: calls.append(1))
    return calls


# --- greedy parity -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_greedy_with_and_without_cache_match_the_reference_for_mixed_lengths(arch: str) -> None:
    model = tiny(arch)
    cached = generate(model, PROMPTS, 20, temperature=0)
    uncached = generate(model, PROMPTS, 20, temperature=0, use_cache=False)
    expected = [greedy_reference(model, prompt, 20) for prompt in PROMPTS]
    assert cached == uncached == expected
    assert len({tuple(out[len(p) :]) for out, p in zip(cached, PROMPTS, strict=True)}) > 1


def test_without_cache_the_context_slides_past_block_size() -> None:
    model = tiny("llama", block_size=16)
    prompt = list(range(1, 13))
    assert generate(model, [prompt], 10, temperature=0, use_cache=False) == [
        greedy_reference(model, prompt, 10)
    ]
    with pytest.raises(ValueError, match=r"12 tokens plus max_new_tokens=10 exceeds .* \(16\)"):
        generate(model, [prompt], 10, temperature=0)
    assert len(generate(model, [prompt], 4, temperature=0)[0]) == 16  # exactly full: fine


def test_a_batch_tensor_is_a_list_of_prompts_and_zero_new_tokens_returns_them() -> None:
    model = tiny("gpt")
    batch = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert generate(model, batch, 5, temperature=0) == generate(
        model, [[1, 2, 3], [4, 5, 6]], 5, temperature=0
    )
    assert generate(model, batch, 0) == [[1, 2, 3], [4, 5, 6]]
    assert generate(model, [], 5) == []


# --- transformers parity --------------------------------------------------------------------------


def _hf_gpt2(transformers: Any) -> Any:
    config = transformers.GPT2Config(
        vocab_size=211, n_positions=64, n_embd=64, n_layer=2, n_head=4, initializer_range=0.2
    )
    return transformers.GPT2LMHeadModel, config


def _hf_llama(transformers: Any, **kwargs: Any) -> Any:
    config = transformers.LlamaConfig(
        vocab_size=211,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.2,
        **kwargs,
    )
    return transformers.LlamaForCausalLM, config


HF_MODELS = {
    "gpt2": _hf_gpt2,
    "llama-gqa": lambda tf: _hf_llama(tf, num_key_value_heads=2),
    "llama-mqa-llama3": lambda tf: _hf_llama(
        tf,
        num_key_value_heads=1,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
}


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_greedy_generation_matches_transformers_generate(name: str) -> None:
    transformers = pytest.importorskip("transformers")
    from llm_torch.interop import from_hf

    torch.manual_seed(0)
    model_class, config = HF_MODELS[name](transformers)
    config.bos_token_id = config.eos_token_id = None  # no early stop on a random model
    config._attn_implementation = "eager"  # a reference independent of our SDPA path
    hf = model_class(config).eval()
    model = from_hf(hf)
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [200, 3, 17]]
    ours = generate(model, prompts, 30, temperature=0)
    for prompt, out in zip(prompts, ours, strict=True):
        ids = torch.tensor([prompt])
        theirs = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=30,
            pad_token_id=0,
        )
        assert out == theirs[0].tolist()


# --- sampling -------------------------------------------------------------------------------------


def frequencies(logits: list[float], n: int = 20000, **kwargs: Any) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([logits]).expand(n, -1)
    counts = torch.bincount(sample_next(rows, generator=generator, **kwargs), minlength=len(logits))
    return (counts / n).tolist()


def test_temperature_top_k_and_top_p_give_the_hand_computed_distributions() -> None:
    logits = [math.log(0.5), math.log(0.3), math.log(0.2)]
    assert frequencies(logits) == pytest.approx([0.5, 0.3, 0.2], abs=0.015)
    # temperature 2: probabilities proportional to sqrt(p)
    root = [math.sqrt(p) for p in (0.5, 0.3, 0.2)]
    expected = [r / sum(root) for r in root]
    assert frequencies(logits, temperature=2.0) == pytest.approx(expected, abs=0.015)
    assert frequencies(logits, top_k=2) == pytest.approx([0.625, 0.375, 0.0], abs=0.015)
    # top_p: 0.5 alone reaches 0.5; 0.6 needs the second token; 0.85 all three
    assert frequencies(logits, top_p=0.5) == [1.0, 0.0, 0.0]
    assert frequencies(logits, top_p=0.6) == pytest.approx([0.625, 0.375, 0.0], abs=0.015)
    assert frequencies(logits, top_p=0.85) == pytest.approx([0.5, 0.3, 0.2], abs=0.015)
    assert frequencies(logits, temperature=0.0) == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_top_k_1_and_tiny_top_p_equal_greedy(arch: str) -> None:
    model = tiny(arch)
    greedy = generate(model, PROMPTS, 15, temperature=0)
    assert generate(model, PROMPTS, 15, top_k=1, seed=3) == greedy
    assert generate(model, PROMPTS, 15, top_p=1e-6, seed=3) == greedy
    assert generate(model, PROMPTS, 15, temperature=1.5, seed=3) != greedy


def test_sampled_tokens_lie_in_the_top_k_and_nucleus_sets() -> None:
    model = tiny("gpt")
    model.apply(lambda m: m.weight.data.div_(5) if isinstance(m, torch.nn.Linear) else None)
    for kwargs in ({"top_k": 3}, {"top_p": 0.5}):
        (out,) = generate(model, [[1, 2, 3]], 25, temperature=1.0, seed=0, **kwargs)
        with torch.no_grad():
            probs = model(torch.tensor([out[:-1]]))[0, 2:].softmax(dim=-1)
        for step, token in enumerate(out[3:]):
            sorted_probs, order = probs[step].sort(descending=True)
            if "top_k" in kwargs:
                allowed = order[:3]
            else:  # smallest prefix reaching 0.5
                allowed = order[: int((sorted_probs.cumsum(0) < 0.5).sum()) + 1]
            assert token in allowed.tolist(), (kwargs, step)
        assert len(set(out[3:])) > 1  # really sampling, not greedy


@pytest.mark.parametrize("use_cache", [True, False])
def test_seeds_reproduce_and_differ_without_touching_the_global_rng(use_cache: bool) -> None:
    model = tiny("llama")
    state = torch.get_rng_state()
    runs = [generate(model, PROMPTS, 12, seed=seed, use_cache=use_cache) for seed in (1, 1, 2)]
    unseeded = generate(model, PROMPTS, 12, top_k=10, top_p=0.9, use_cache=use_cache)
    assert torch.equal(torch.get_rng_state(), state)
    assert runs[0] == runs[1] != runs[2]
    assert [len(out) for out in unseeded] == [len(p) + 12 for p in PROMPTS]


def test_cached_and_uncached_sampling_draw_the_same_tokens() -> None:
    model = tiny("gpt")
    kwargs: dict[str, Any] = {"temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 7}
    assert generate(model, PROMPTS, 12, **kwargs) == generate(
        model, PROMPTS, 12, use_cache=False, **kwargs
    )


# --- stopping and streaming -----------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_ends_each_sequence_and_generation_stops_when_all_have(use_cache: bool) -> None:
    model = tiny("gpt")
    free = generate(model, PROMPTS, 20, temperature=0, use_cache=use_cache)
    eos = free[0][len(PROMPTS[0]) + 3]  # produced by the first prompt at step 4 (or earlier)

    def until_eos(out: list[int], prompt: list[int]) -> list[int]:
        new = out[len(prompt) :]
        return prompt + (new[: new.index(eos) + 1] if eos in new else new)

    stopped = generate(model, PROMPTS, 20, temperature=0, eos_id=eos, use_cache=use_cache)
    assert stopped == [until_eos(out, p) for out, p in zip(free, PROMPTS, strict=True)]
    assert stopped[0][-1] == eos and len(stopped[0]) <= len(PROMPTS[0]) + 4

    calls = count_forwards(model)
    (alone,) = generate(model, [PROMPTS[0]], 20, temperature=0, eos_id=eos, use_cache=use_cache)
    assert len(calls) == len(alone) - len(PROMPTS[0])  # one forward per produced token, no more


def test_on_token_streams_exactly_the_new_tokens_as_they_are_produced() -> None:
    model = tiny("llama")
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8]]
    streamed: list[tuple[int, int]] = []
    seen_at_forward: list[int] = []
    model.register_forward_pre_hook(lambda *args: seen_at_forward.append(len(streamed)))
    out = generate(
        model, prompts, 6, seed=0, eos_id=None, on_token=lambda i, t: streamed.append((i, t))
    )
    for index, prompt in enumerate(prompts):
        assert [t for i, t in streamed if i == index] == out[index][len(prompt) :]
    # All prompts run as one batch: each step streams rows in order, and its tokens are out
    # before the next forward pass starts.
    assert [i for i, _ in streamed] == [0, 1, 2] * 6
    assert seen_at_forward == [0, 3, 6, 9, 12, 15]


# --- input errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompts", "kwargs", "message"),
    [
        ([1, 2, 3], {}, r"list of prompts.*item 0 is a int\. For one prompt pass \[ids\]"),
        (torch.tensor([1, 2, 3]), {}, r"Prompt 0 is a 0-D tensor"),
        ([[1, 2], []], {}, r"Prompt 1 is empty"),
        ([[1, VOCAB]], {}, rf"outside the model's vocabulary 0\.\.{VOCAB - 1}"),
        ([[1]], {"temperature": -1.0}, r"temperature must be >= 0"),
        ([[1]], {"top_k": 0}, r"top_k must be >= 1"),
        ([[1]], {"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ([[1]], {"max_new_tokens": -1}, r"max_new_tokens must be >= 0"),
    ],
)
def test_bad_input_is_named(prompts: Any, kwargs: dict[str, Any], message: str) -> None:
    model = tiny("gpt")
    with pytest.raises(ValueError, match=message):
        generate(model, prompts, **{"max_new_tokens": 3, **kwargs})
