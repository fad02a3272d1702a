"""Mixed-length batches, the static KV cache and the compiled decode step.

References are independent of the batched path: each prompt generated alone (no padding, plain
causal attention), full forward passes without any cache, and the dynamic-cache decode.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from generation_helpers import greedy_reference

from llm_torch.architectures import GPT, GPTConfig, Llama, LlamaConfig
from llm_torch.components import KVCache
from llm_torch.generation import generate, new_cache

VOCAB = 97
#: Lengths 1 to 9, unsorted, with a repeat: real left padding in every row but one.
PROMPTS = [[5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11, 12], [14], [11, 12, 13], [30, 31, 32, 33, 34]]

# Tiny models gain nothing from more threads; see conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")

MODELS: dict[str, Callable[[int], GPT | Llama]] = {
    "gpt": lambda block: GPT(
        GPTConfig(vocab_size=VOCAB, block_size=block, n_layer=2, n_head=4, n_embd=32)
    ),
    "gpt-rope-qknorm": lambda block: GPT(
        GPTConfig(
            vocab_size=VOCAB,
            block_size=block,
            n_layer=2,
            n_head=4,
            n_embd=32,
            positions="rope",
            qk_norm=True,
            logit_softcap=30.0,
        )
    ),
    "llama-gqa": lambda block: Llama(
        LlamaConfig(
            vocab_size=VOCAB,
            block_size=block,
            n_layer=2,
            n_head=4,
            n_kv_head=2,
            n_embd=32,
            mlp_hidden=48,
        )
    ),
}


def tiny(name: str, block_size: int = 64) -> GPT | Llama:
    """A random tiny model with weights scaled up, so next-token choices are not near-ties."""
    torch.manual_seed(0)
    model = MODELS[name](block_size)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(10)
    return model.eval()


def alone(model: GPT | Llama, prompts: list[list[int]], steps: int, **kwargs: Any) -> list[Any]:
    """Each prompt generated on its own: a batch of one needs no padding."""
    return [generate(model, [prompt], steps, **kwargs)[0] for prompt in prompts]


# --- the model's padded forward pass --------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_a_left_padded_row_gets_the_logits_of_its_prompt_alone(name: str) -> None:
    model = tiny(name)
    lengths = [3, 9, 1, 6]
    rows = [torch.randint(0, VOCAB, (n,)) for n in lengths]
    pad = torch.tensor([9 - n for n in lengths])
    ids = torch.stack([torch.cat([torch.zeros(9 - len(r), dtype=torch.long), r]) for r in rows])
    with torch.no_grad():
        padded = model(ids, cache=KVCache(pad=pad))
        assert not padded.isnan().any()  # padding queries see themselves: no empty softmax
        for row, tokens in enumerate(rows):
            expected = model(tokens[None])[0]
            torch.testing.assert_close(padded[row, pad[row] :], expected, atol=1e-4, rtol=1e-4)
        # The same through the cache: prefill, then decode steps with the padding kept.
        cache = new_cache(model, batch_size=4, max_len=12)
        cache.pad = pad
        pieces = [model(ids[:, :5], cache=cache)]
        pieces += [model(ids[:, t : t + 1], cache=cache.seek(t)) for t in range(5, 9)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), padded, atol=1e-4, rtol=1e-4)
        last = model(ids, cache=KVCache(pad=pad, last_only=True))
        assert last.shape == (4, 1, VOCAB)
        torch.testing.assert_close(last, padded[:, -1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_static_cache_steps_equal_dynamic_cache_steps(name: str) -> None:
    model = tiny(name)
    idx = torch.randint(0, VOCAB, (3, 20))
    pad = torch.tensor([0, 4, 11])
    for row_pad in (None, pad):
        with torch.no_grad():
            cache = new_cache(model, batch_size=3, max_len=20)
            cache.pad = row_pad
            dynamic = [model(idx[:, :8], cache=cache)]
            dynamic += [model(idx[:, t : t + 1], cache=cache.seek(t)) for t in range(8, 20)]
            cache = new_cache(model, batch_size=3, max_len=32)  # longer: unwritten slots masked
            cache.pad = row_pad
            static = [model(idx[:, :8], cache=cache)]
            static += [
                model(idx[:, t : t + 1], cache=cache.seek(t, static=True)) for t in range(8, 20)
            ]
        torch.testing.assert_close(torch.cat(static, 1), torch.cat(dynamic, 1), atol=1e-4, rtol=0)


def test_padded_and_static_calls_reject_bad_input() -> None:
    model = tiny("llama-gqa")
    idx = torch.randint(0, VOCAB, (2, 6))
    with pytest.raises(ValueError, match=r"pad must hold one left-padding count per row, shape"):
        model(idx, cache=KVCache(pad=torch.tensor([1, 2, 3])))
    with pytest.raises(ValueError, match=r"has no buffers, so it only runs whole sequences"):
        model(idx, cache=KVCache().seek(0, static=True))
    cache = new_cache(model, batch_size=2, max_len=8)
    with torch.no_grad():
        model(idx, cache=cache)
        with pytest.raises(ValueError, match=r"KV cache overflow: positions 8\.\.8 .* holds 8"):
            model(idx[:, :1], cache=cache.seek(8, static=True))


# --- generate: one batch equals one prompt at a time ---------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("mode", ["dynamic", "static", "no cache"])
def test_mixed_length_batch_greedy_equals_each_prompt_alone(name: str, mode: str) -> None:
    model = tiny(name)
    kwargs = {"static_cache": mode == "static", "use_cache": mode != "no cache"}
    batched = generate(model, PROMPTS, 16, temperature=0, **kwargs)
    expected = [greedy_reference(model, prompt, 16) for prompt in PROMPTS]
    assert batched == expected
    assert alone(model, PROMPTS, 16, temperature=0, **kwargs) == expected
    assert len({tuple(out[-16:]) for out in batched}) == len(PROMPTS)  # not one repeated output


@pytest.mark.parametrize("name", ["gpt", "llama-gqa"])
def test_mixed_length_batch_sampling_equals_each_prompt_alone_under_its_row_seed(
    name: str,
) -> None:
    model = tiny(name)
    model.apply(lambda m: m.weight.data.div_(8) if isinstance(m, torch.nn.Linear) else None)
    kwargs: dict[str, Any] = {"temperature": 1.0, "top_k": 40, "top_p": 0.95}
    for use_cache in (True, False):
        batched = generate(model, PROMPTS, 12, seed=100, use_cache=use_cache, **kwargs)
        for row, prompt in enumerate(PROMPTS):
            assert (
                batched[row]
                == generate(model, [prompt], 12, seed=100 + row, use_cache=use_cache, **kwargs)[0]
            )
    greedy = generate(model, PROMPTS, 12, temperature=0)
    assert sum(out != ref for out, ref in zip(batched, greedy, strict=True)) >= 3  # really sampled
    assert generate(model, PROMPTS, 12, seed=100, static_cache=True, **kwargs) == generate(
        model, PROMPTS, 12, seed=100, **kwargs
    )


def test_eos_stops_each_row_of_a_mixed_batch_where_it_would_stop_alone() -> None:
    model = tiny("llama-gqa")
    free = generate(model, PROMPTS, 16, temperature=0)
    eos = free[1][len(PROMPTS[1]) + 2]
    stopped = generate(model, PROMPTS, 16, temperature=0, eos_id=eos, static_cache=True)
    assert stopped == alone(model, PROMPTS, 16, temperature=0, eos_id=eos)
    assert stopped[1][-1] == eos and len(stopped[1]) <= len(PROMPTS[1]) + 3


# --- block_size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("static_cache", [False, True])
def test_the_cache_never_grows_past_block_size(
    static_cache: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm_torch.generation

    model = tiny("gpt", block_size=24)
    sizes: list[int | None] = []
    setup = llm_torch.generation.new_cache

    def recording(model: GPT | Llama, batch: int, max_len: int | None = None) -> KVCache:
        sizes.append(max_len)
        return setup(model, batch, max_len)

    monkeypatch.setattr(llm_torch.generation, "new_cache", recording)
    prompts = [list(range(1, 15)), [3, 4]]
    out = generate(model, prompts, 10, temperature=0, static_cache=static_cache)  # 14 + 10 = 24
    assert sizes == [24]
    assert out == [greedy_reference(model, prompt, 10) for prompt in prompts]
    with pytest.raises(ValueError, match=r"14 tokens plus max_new_tokens=11 exceeds .* \(24\)"):
        generate(model, prompts, 11, temperature=0, static_cache=static_cache)
    assert sizes == [24]  # refused before any allocation
    short = generate(model, [[3, 4]], 3, temperature=0, static_cache=static_cache)
    assert short == [greedy_reference(model, [3, 4], 3)]
    assert sizes[-1] == (24 if static_cache else 5)  # static: rounded up, capped at block_size


@pytest.mark.parametrize("name", ["gpt", "llama-gqa"])
def test_without_cache_a_mixed_batch_slides_past_block_size_like_each_prompt(name: str) -> None:
    model = tiny(name, block_size=12)
    prompts = [list(range(1, 11)), [7, 8, 9], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    out = generate(model, prompts, 15, temperature=0, use_cache=False)
    assert out == [greedy_reference(model, prompt, 15) for prompt in prompts]
    with pytest.raises(ValueError, match=r"static_cache and compile .* need use_cache=True"):
        generate(model, prompts, 3, use_cache=False, static_cache=True)


# --- compiled decode -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt", "llama-gqa"])
def test_compiled_decode_equals_eager_for_a_mixed_batch_and_compiles_once(name: str) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny(name)
    expected = [greedy_reference(model, prompt, 16) for prompt in PROMPTS]
    assert generate(model, PROMPTS, 16, temperature=0, compile=True) == expected
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every decode step
    # A second run of another prompt length reuses it: same batch, same rounded cache length.
    shorter = [prompt[:2] for prompt in PROMPTS]
    assert generate(model, shorter, 16, temperature=0, compile=True) == [
        greedy_reference(model, prompt, 16) for prompt in shorter
    ]
    kwargs: dict[str, Any] = {"temperature": 0.8, "top_k": 20, "seed": 3}
    assert generate(model, PROMPTS, 16, compile=True, **kwargs) == generate(
        model, PROMPTS, 16, **kwargs
    )
    assert counters["stats"]["unique_graphs"] == 1


# --- the CLI --------------------------------------------------------------------------------------


def test_cli_compile_stays_off_on_cpu_and_prints_the_eager_text(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    transformers = pytest.importorskip("transformers")
    from llm_torch.generate_command import generate_command

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=300, n_positions=32, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    args = [f"--hf_dir={tmp_path}", "--tokenizer=byte", "--prompt=ab", "--device=cpu"]
    args += ["--max_new_tokens=8", "--temperature=0"]
    generate_command(args)
    eager = capsys.readouterr()
    generate_command([*args, "--compile"])
    compiled = capsys.readouterr()
    assert "--compile is ignored on CPU" in compiled.err and "ignored" not in eager.err
    assert compiled.out == eager.out and eager.out.startswith("ab") and len(eager.out) > 3
