"""Generation speed with and without the KV cache, next to ``transformers``' ``generate``.

Run ``python -m llm_torch.bench.generate`` (``--help`` for options). By default it builds a
GPT-2-124M-shaped model with random weights, float32 on CPU, and times greedy decoding of 256 new
tokens after a 32-token prompt, batch 1:

- llm-torch ``generate`` with the KV cache (prefill once, then one token per step);
- llm-torch ``generate`` without it (every step re-reads the whole context);
- ``transformers`` ``generate`` on the same weights (``to_hf``; greedy, ``use_cache=True``).

Each is warmed up on a short run first, then timed once per repeat (best repeat reported). EOS is
disabled everywhere, so every run produces exactly ``--new-tokens`` tokens; the report also says
how many leading tokens llm-torch and ``transformers`` agree on (random weights give near-flat
logits, so a late disagreement can be a float tie, not a bug).

On a machine shared with other jobs, pass ``--threads 1``: single-token decoding is a string of
small kernels, and an oversubscribed intra-op thread pool can slow it several-fold.
"""

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from llm_torch.architectures import GPT, GPT_PRESETS, LLAMA_PRESETS, GPTConfig, Llama, LlamaConfig
from llm_torch.architectures.registry import Model
from llm_torch.generation import generate


def build(preset: str, dtype: torch.dtype, device: str) -> Model:
    """A randomly initialised model of a named shape, in eval mode."""
    torch.manual_seed(0)
    with torch.device(device):
        model: Model
        if preset in GPT_PRESETS:
            model = GPT(GPTConfig.from_name(preset))
        else:
            model = Llama(LlamaConfig.from_name(preset))
    return model.to(dtype).eval()


def timed(run: Callable[[], list[list[int]]], device: str, repeats: int) -> tuple[float, list[int]]:
    """Best wall time of ``repeats`` calls (synchronising an accelerator), and the first output."""
    best, out = float("inf"), []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = run()[0]
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> None:
    """Parse options, run the three generators, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2", choices=[*GPT_PRESETS, *LLAMA_PRESETS])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--skip-uncached", action="store_true", help="the slow one")
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = build(args.preset, dtype, args.device)
    prompt = torch.randint(0, model.config.vocab_size, (args.batch, args.prompt_len))
    n = args.new_tokens
    print(
        f"{args.preset} ({model.num_params() / 1e6:.0f}M params, random weights), {args.dtype} on "
        f"{args.device}, {torch.get_num_threads()} threads; batch {args.batch}, prompt "
        f"{args.prompt_len}, {n} new tokens, greedy, torch {torch.__version__}"
    )

    def ours(use_cache: bool, tokens: int = n) -> Callable[[], list[list[int]]]:
        return lambda: generate(model, prompt, tokens, temperature=0, use_cache=use_cache)

    runs: dict[str, tuple[Callable[[], list[list[int]]], Callable[[], list[list[int]]]]] = {
        "llm-torch, KV cache": (ours(True), ours(True, 8)),
    }
    if not args.skip_uncached:
        runs["llm-torch, no cache"] = (ours(False), ours(False, 8))
    if not args.skip_hf:
        from llm_torch.interop import to_hf

        hf: Any = to_hf(model)  # Any: mypy cannot read transformers' decorated methods
        hf.to(device=args.device, dtype=dtype)
        ids = prompt.to(args.device)

        def theirs(tokens: int = n) -> Callable[[], list[list[int]]]:
            kwargs = {"do_sample": False, "use_cache": True, "pad_token_id": 0}
            return lambda: hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                **kwargs,
            ).tolist()

        runs["transformers generate"] = (theirs(), theirs(8))

    outputs: dict[str, list[int]] = {}
    print(f"{'generator':<24}{'seconds':>10}{'tokens/s':>12}{'ms/token':>10}")
    for name, (run, warm_up) in runs.items():
        warm_up()
        seconds, outputs[name] = timed(run, args.device, args.repeats)
        rate = args.batch * n / seconds
        print(f"{name:<24}{seconds:>10.2f}{rate:>12.1f}{1000 * seconds / n:>10.2f}")
    reference = outputs["llm-torch, KV cache"][args.prompt_len :]
    for name, out in outputs.items():
        new = out[args.prompt_len :]
        pairs = enumerate(zip(reference, new, strict=True))
        same = next((i for i, (a, b) in pairs if a != b), n)
        print(f"{name}: first {same}/{n} new tokens equal llm-torch's cached output")


if __name__ == "__main__":
    main()
