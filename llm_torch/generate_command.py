"""``llm-torch generate``: continue a prompt with a trained model, without any YAML.

It reads a checkpoint written by ``llm-torch fit`` (which carries the model config and the
tokenizer spec) or a Hugging Face ``save_pretrained`` folder, through the loader ``llm-torch
evaluate`` uses (:mod:`llm_torch.engine.loading`). Plain ``argparse``, no Trainer:
:func:`llm_torch.cli.main` sends the subcommand here.
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from llm_torch.engine.loading import add_model_options, load_model, place
from llm_torch.generation import generate
from llm_torch.sampling import SAMPLING_DEFAULTS
from llm_torch.tokenizer import Tokenizer


def _generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-torch generate", description="Sample text from a trained model."
    )
    add_model_options(parser)
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="text to continue (default: start fresh)")
    prompt.add_argument("--prompt_file", help="file whose text is the prompt")
    defaults = SAMPLING_DEFAULTS
    parser.add_argument("--max_new_tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument(
        "--temperature", type=float, default=defaults.temperature, help="0 means greedy"
    )
    parser.add_argument("--top_k", type=int, default=defaults.top_k)
    parser.add_argument("--top_p", type=float, default=defaults.top_p)
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (static KV cache, CUDA graphs), for long or repeated "
        "runs on GPU; ignored on CPU, where it was measured slower than eager",
    )
    return parser


def _printer(
    tokenizer: Tokenizer, prompt: list[int]
) -> tuple[Callable[[int, int], None], list[int]]:
    """An ``on_token`` callback that prints text as it is produced.

    Tokens are decoded together and only the new, complete text is printed, so characters split
    across tokens (bytes, BPE pieces) never come out garbled.
    """
    ids = list(prompt)
    printed = [len(tokenizer.decode(ids))]

    def on_token(_: int, token: int) -> None:
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the rest
            print(text[printed[0] :], end="", flush=True)
            printed[0] = len(text)

    return on_token, ids


def generate_command(argv: list[str]) -> None:
    """Run ``llm-torch generate``."""
    args = _generate_parser().parse_args(argv)
    model, tokenizer = load_model(args.ckpt_path, args.hf_dir, args.tokenizer)
    model = place(model, args.device, args.precision)
    text = Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else args.prompt
    prompt = tokenizer.encode(text) if text else [tokenizer.eot_id]
    # The KV cache holds block_size tokens; longer outputs slide the context instead.
    use_cache = len(prompt) + args.max_new_tokens <= model.config.block_size
    device = next(model.parameters()).device
    compile_decode = args.compile and _compile_pays_off(device, use_cache)
    for sample in range(args.num_samples):
        if sample:
            print("\n" + "-" * 40)
        print(text, end="", flush=True)
        on_token, _ = _printer(tokenizer, prompt)
        generate(
            model,
            [prompt],
            args.max_new_tokens,
            use_cache=use_cache,
            compile=compile_decode,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_id=tokenizer.eot_id,
            seed=args.seed + sample,
            on_token=on_token,
        )
    print()


def _compile_pays_off(device: torch.device, use_cache: bool) -> bool:
    """Whether ``--compile`` is honoured; says on stderr why not when it is not.

    On CPU the compiled step was not reliably within 5% of eager (1.6x slower for GPT-2 124M
    with two threads on a loaded machine), so it stays off there; without the KV cache there is
    no static decode step to compile.
    """
    if device.type == "cpu":
        print("note: --compile is ignored on CPU (not faster than eager there).", file=sys.stderr)
        return False
    if not use_cache:
        print(
            "note: --compile is ignored: prompt plus --max_new_tokens exceed block_size, so "
            "generation slides the context without a KV cache.",
            file=sys.stderr,
        )
        return False
    return True
