"""Generation speed: eager and compiled KV-cache decoding, next to ``transformers``' ``generate``.

Run ``python -m llm_torch.bench.generate`` (``--help`` for options). By default it builds a
GPT-2-124M-shaped model with random weights, float32 on CPU, and times greedy decoding of 256 new
tokens at batch 1 (a 32-token prompt) and batch 8 (prompts of 16 to 32 tokens, in one padded
pass), with:

- llm-torch ``generate`` with the KV cache, eager (dynamic cache);
- llm-torch ``generate(compile=True)``: the static-cache decode step under ``torch.compile``
  (CUDA graphs on GPU); its compile time is printed separately and not counted;
- llm-torch ``generate`` without the cache (every step re-reads the whole context; slow);
- ``transformers`` ``generate`` on the same weights (``to_hf``; greedy, ``use_cache=True``,
  left padding with an attention mask for the mixed batch).

Then the first-token latency: one new token after a ``--prefill-len`` (512) token prompt, i.e.
the prefill forward pass.

Each generator is warmed up first (for the compiled one, on the exact timed shapes), then timed
once per repeat (best repeat reported). EOS is disabled everywhere, so every row produces exactly
``--new-tokens`` tokens; the report also says how many leading tokens each generator agrees on
with llm-torch's eager output (random weights give near-flat logits, so a late disagreement can
be a float tie, not a bug).

On a machine shared with other jobs, pass ``--threads 1``: single-token decoding is a string of
small kernels, and an oversubscribed intra-op thread pool can slow it several-fold.
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from llm_torch.architectures import GPT, GPT_PRESETS, LLAMA_PRESETS, GPTConfig, Llama, LlamaConfig
from llm_torch.architectures.base import DecoderLM
from llm_torch.generation import generate

Run = Callable[[], list[list[int]]]


def build(preset: str, dtype: torch.dtype, device: str) -> DecoderLM:
    """A randomly initialised model of a named shape, in eval mode."""
    torch.manual_seed(0)
    with torch.device(device):
        model: DecoderLM
        if preset in GPT_PRESETS:
            model = GPT(GPTConfig.from_name(preset))
        else:
            model = Llama(LlamaConfig.from_name(preset))
    return model.to(dtype).eval()


def mixed_prompts(batch: int, prompt_len: int, vocab_size: int) -> list[list[int]]:
    """``batch`` random prompts, lengths spread evenly from ``prompt_len`` down to half of it."""
    generator = torch.Generator().manual_seed(1)
    shortest = max(1, prompt_len // 2)
    lengths = [prompt_len - (prompt_len - shortest) * i // max(1, batch - 1) for i in range(batch)]
    return [torch.randint(0, vocab_size, (n,), generator=generator).tolist() for n in lengths]


def timed(run: Run, device: str, repeats: int) -> tuple[float, list[list[int]]]:
    """Best wall time of ``repeats`` calls (synchronising an accelerator), and the last output."""
    best, out = float("inf"), []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = run()
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def hf_runner(hf: Any, prompts: list[list[int]], tokens: int, device: str) -> Run:
    """``transformers`` greedy ``generate`` on left-padded ``prompts``; rows without padding."""
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)

    def run() -> list[list[int]]:
        out = hf.generate(
            ids,
            attention_mask=mask,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
        )
        return [p + row[width:] for p, row in zip(prompts, out.tolist(), strict=True)]

    return run


def agreement(reference: list[list[int]], out: list[list[int]], prompts: list[list[int]]) -> int:
    """Fewest leading new tokens on which a row of ``out`` equals the same row of ``reference``."""
    fewest = None
    for prompt, ref, row in zip(prompts, reference, out, strict=True):
        pairs = list(zip(ref[len(prompt) :], row[len(prompt) :], strict=True))
        same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
        fewest = same if fewest is None else min(fewest, same)
    return fewest or 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse options, run the generators per batch size, print a table and the prefill latency.

    Returns:
        The printed figures (``rows``: one per generator and batch, ``first_token_ms``,
        ``compile_seconds`` per batch), for ``bench.gpu`` to record.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2", choices=[*GPT_PRESETS, *LLAMA_PRESETS])
    parser.add_argument("--prompt-len", type=int, default=32, help="longest prompt of a batch")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prefill-len", type=int, default=512, help="0 skips the latency")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--skip-uncached", action="store_true", help="the slow one")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = build(args.preset, dtype, args.device)
    n, vocab = args.new_tokens, model.config.vocab_size
    print(
        f"{args.preset} ({model.num_params() / 1e6:.0f}M params, random weights), {args.dtype} on "
        f"{args.device}, {torch.get_num_threads()} threads; prompts up to {args.prompt_len} "
        f"tokens, {n} new tokens, greedy, torch {torch.__version__}"
    )
    hf: Any = None
    if not args.skip_hf:
        from llm_torch.interop import to_hf

        hf = to_hf(model)  # Any: mypy cannot read transformers' decorated methods
        hf.to(device=args.device, dtype=dtype)

    def ours(prompts: list[list[int]], tokens: int, **kwargs: Any) -> Run:
        return lambda: generate(model, prompts, tokens, temperature=0, **kwargs)

    figures: dict[str, Any] = {"rows": [], "first_token_ms": {}, "compile_seconds": {}}
    header = f"{'generator':<26}{'batch':>6}{'seconds':>9}{'tokens/s':>10}{'ms/step':>9}"
    print(f"{header}{'vs HF':>7}  agreement")
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = mixed_prompts(batch, args.prompt_len, vocab)
        # name: (timed run, warm-up run)
        runs: dict[str, tuple[Run, Run]] = {
            "llm-torch, KV cache": (ours(prompts, n), ours(prompts, 8)),
        }
        if not args.skip_compile:  # warm up on the timed shapes: that is what compiles
            compiled = ours(prompts, n, compile=True)
            runs["llm-torch, compiled"] = (compiled, compiled)
        if not args.skip_uncached:
            runs["llm-torch, no cache"] = (
                ours(prompts, n, use_cache=False),
                ours(prompts, 8, use_cache=False),
            )
        if hf is not None:
            runs["transformers generate"] = (
                hf_runner(hf, prompts, n, args.device),
                hf_runner(hf, prompts, 8, args.device),
            )
        rates: dict[str, float] = {}
        outputs: dict[str, list[list[int]]] = {}
        for name, (run, warm_up) in runs.items():
            start = time.perf_counter()
            warm_up()
            if name == "llm-torch, compiled":
                took = time.perf_counter() - start
                figures["compile_seconds"][batch] = took
                print(f"  (compiled: first call, compile included, {took:.1f} s)")
            seconds, outputs[name] = timed(run, args.device, args.repeats)
            rates[name] = batch * n / seconds
        hf_rate = rates.get("transformers generate")
        reference = outputs["llm-torch, KV cache"]
        for name, rate in rates.items():
            seconds = batch * n / rate
            versus = f"{rate / hf_rate:>6.2f}x" if hf_rate else f"{'-':>7}"
            same = agreement(reference, outputs[name], prompts)
            figures["rows"].append(
                {"generator": name, "batch": batch, "tokens_per_sec": rate, "agreement": same}
            )
            print(
                f"{name:<26}{batch:>6}{seconds:>9.2f}{rate:>10.1f}{1000 * seconds / n:>9.2f}"
                f"{versus}  {same}/{n} new tokens, every row"
            )

    prefill = min(args.prefill_len, model.config.block_size - 1)
    if prefill > 0:
        prompt = mixed_prompts(1, prefill, vocab)
        latency = {"llm-torch (eager prefill)": ours(prompt, 1)}
        if hf is not None:
            latency["transformers generate"] = hf_runner(hf, prompt, 1, args.device)
        print(f"first-token latency, {prefill}-token prompt, batch 1:")
        for name, run in latency.items():
            run()
            seconds, _ = timed(run, args.device, max(args.repeats, 3))
            figures["first_token_ms"][name] = 1000 * seconds
            print(f"  {name:<26}{1000 * seconds:>9.1f} ms")
    return figures


if __name__ == "__main__":
    main()
