"""One KV cache per model and shape: reused across ``generate`` calls, never leaking between them.

References: greedy decoding by full forward passes without any cache (``greedy_reference``),
torch's own counters of compiled graphs and CUDA graph recordings, and tensor identity.
"""

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from generation_helpers import greedy_reference, tiny
from torch.utils._python_dispatch import TorchDispatchMode

from llm_torch.architectures import GPT, GPTConfig, Llama
from llm_torch.components import KVCache
from llm_torch.generation import generate, new_cache

MODES: dict[str, dict[str, bool]] = {"dynamic": {}, "static": {"static_cache": True}}

# Tiny models gain nothing from more threads; see conftest.one_thread.
pytestmark = pytest.mark.usefixtures("one_thread")


def cache_tensors(cache: KVCache | None) -> list[torch.Tensor]:
    """A cache's tensors themselves (holding them keeps their memory from being reused)."""
    layers = [] if cache is None else cache.layers
    return [tensor for layer in layers for tensor in (layer.k, layer.v)]


def buffers(model: GPT | Llama) -> list[torch.Tensor]:
    """The tensors of the cache ``generate`` keeps on the model."""
    return cache_tensors(model.kv_cache)


def buffers_seen_by_prefill(model: GPT | Llama) -> list[list[torch.Tensor]]:
    """Per ``generate`` call, the cache tensors its (eager) prefill wrote to."""
    seen: list[list[torch.Tensor]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        cache = kwargs.get("cache")
        if torch.compiler.is_compiling() or cache is None or not cache.layers:
            return  # reading the host position here would recompile a compiled step per token
        if cache.pos == 0 and cache.input_pos is None:
            seen.append(cache_tensors(cache))

    model.register_forward_pre_hook(record, with_kwargs=True)
    return seen


# --- reuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_a_second_call_of_the_same_shape_writes_the_same_buffers(mode: str) -> None:
    model = tiny()
    seen = buffers_seen_by_prefill(model)
    prompts = [[5, 6, 7], [8, 9, 10]]
    generate(model, prompts, 6, temperature=0, **MODES[mode])
    generate(model, [[1, 2, 3], [4, 5, 6]], 6, temperature=0, **MODES[mode])
    first, second = seen
    assert len(first) == 2 * model.config.n_layer
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert [t.data_ptr() for t in first] == [t.data_ptr() for t in second]


def test_another_batch_size_length_or_dtype_gets_a_new_cache() -> None:
    model = tiny()
    seen = buffers_seen_by_prefill(model)
    generate(model, [[5, 6, 7], [8, 9, 10]], 6, temperature=0)
    generate(model, [[5, 6, 7]], 6, temperature=0)  # batch 1
    generate(model, [[5, 6, 7]], 9, temperature=0)  # 3 + 9 positions
    model.to(torch.float64)
    generate(model, [[5, 6, 7]], 9, temperature=0)
    shapes = [(t.shape, t.dtype) for t in (calls[0] for calls in seen)]
    assert shapes == [
        ((2, 4, 9, 8), torch.float32),
        ((1, 4, 9, 8), torch.float32),
        ((1, 4, 12, 8), torch.float32),
        ((1, 4, 12, 8), torch.float64),
    ]
    pointers = {t.data_ptr() for calls in seen for t in calls}
    assert len(pointers) == 4 * len(seen[0])  # every call its own memory


def test_clear_cache_frees_what_generate_kept() -> None:
    model = tiny()
    generate(model, [[5, 6, 7]], 4, temperature=0)
    assert len(buffers(model)) == 2 * model.config.n_layer
    model.clear_cache()
    assert buffers(model) == []
    assert generate(model, [[5, 6, 7]], 4, temperature=0) == [greedy_reference(model, [5, 6, 7], 4)]


# --- nothing leaks between calls ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt", "llama"])
@pytest.mark.parametrize("mode", list(MODES))
def test_consecutive_calls_give_what_a_fresh_model_gives(name: str, mode: str) -> None:
    model = tiny(name)
    long, short = list(range(20, 40)), [7, 8]
    padded, unpadded = [[1, 2, 3, 4, 5, 6], [9, 10]], [[11, 12, 13], [14, 15, 16]]
    # Static: all of these share one cache (64 positions, the block size, for batches of 2).
    calls = [[long, short], [short, long], padded, unpadded, padded, [short, short]]
    for prompts in calls:
        out = generate(model, prompts, 8, temperature=0, **MODES[mode])
        assert out == [greedy_reference(model, prompt, 8) for prompt in prompts]


@pytest.mark.parametrize("mode", list(MODES))
def test_a_reused_cache_does_not_carry_non_finite_values_over(mode: str) -> None:
    model = tiny()
    prompts = [[1, 2, 3, 4, 5, 6], [9, 10]]
    generate(model, prompts, 8, temperature=0, **MODES[mode])
    for tensor in buffers(model):  # as after a run whose activations overflowed
        tensor.fill_(float("nan"))
    out = generate(model, prompts, 8, temperature=0, **MODES[mode])
    assert out == [greedy_reference(model, prompt, 8) for prompt in prompts]


def test_a_failed_call_leaves_a_cache_the_next_call_reuses_cleanly() -> None:
    model = tiny()
    prompts = [[5, 6, 7], [8, 9, 10]]

    def fail(index: int, token: int) -> None:
        raise KeyError(token)

    with pytest.raises(KeyError):
        generate(model, prompts, 5, on_token=fail, static_cache=True)
    assert generate(model, prompts, 5, temperature=0, static_cache=True) == [
        greedy_reference(model, prompt, 5) for prompt in prompts
    ]


# --- compiled decode ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_compiled_call_of_the_same_shape_does_not_recompile() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny()
    seen = buffers_seen_by_prefill(model)
    prompts = [[1, 2, 3, 4, 5, 6], [9, 10]]
    generate(model, prompts, 8, temperature=0, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1
    with torch.compiler.set_stance("fail_on_recompile"):
        for again in ([[11, 12, 13], [14, 15]], prompts):  # same batch, same rounded length
            out = generate(model, again, 8, temperature=0, compile=True)
            assert out == [greedy_reference(model, prompt, 8) for prompt in again]
    assert counters["stats"]["unique_graphs"] == graphs
    assert all(a is b for a, b in zip(seen[0], seen[-1], strict=True))  # the same buffers


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_second_compiled_call_replays_its_cuda_graph_instead_of_recording_one() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny().cuda()
    prompts = [[1, 2, 3, 4, 5, 6], [9, 10]]
    expected = [greedy_reference(model, prompt, 8) for prompt in prompts]
    assert generate(model, prompts, 8, temperature=0, compile=True) == expected
    # Bumped by every CUDA graph recorded; a cache at a new address makes the tree record again.
    recorded = counters["inductor"]["cudagraph_recorded_non_static_inputs"]
    assert recorded > 0
    assert generate(model, prompts, 8, temperature=0, compile=True) == expected
    assert counters["inductor"]["cudagraph_recorded_non_static_inputs"] == recorded


# --- eager static decode reads no host integer per layer ---------------------------------------


class HostReads(TorchDispatchMode):
    """Counts device-to-host scalar reads (``int(t)``, ``t.item()``): each is a sync on GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Any = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_a_static_decode_step_reads_no_host_integer() -> None:
    model = tiny(n_layer=4)
    cache = new_cache(model, batch_size=1, max_len=16)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3, 4, 5]]), cache=cache)
        with HostReads() as reads:
            logits = model(torch.tensor([[6]]), cache=cache.seek(5, static=True))
        dynamic = new_cache(model, batch_size=1, max_len=16)
        model(torch.tensor([[1, 2, 3, 4, 5]]), cache=dynamic)
        expected = model(torch.tensor([[6]]), cache=dynamic.seek(5))
    assert reads.count == 0  # the position stays on the host as well as on the device
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


# --- training carries no cache -----------------------------------------------------------------


def test_a_training_sample_leaves_no_cache_on_the_model() -> None:
    from llm_torch.engine.module import CausalLMModule
    from llm_torch.engine.samples import TextSampleLogger
    from llm_torch.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("byte")
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32
    )
    module = CausalLMModule(config)
    module.configure_model()
    assert module.model is not None
    keys = set(module.state_dict())
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(tokenizer=tokenizer),
        sanity_checking=False,
        is_global_zero=False,
        loggers=[],
    )
    module.train()
    TextSampleLogger(prompt="To be", max_new_tokens=6).on_validation_end(trainer, module)  # type: ignore[arg-type]
    assert module.model.training
    assert module.model.kv_cache is None
    assert set(module.state_dict()) == keys
