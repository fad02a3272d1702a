"""``llm-torch train-tokenizer``: train a BPE on a source, or compare tokenizers on held-out text.

Plain ``argparse``, like ``generate`` and ``export``: no Trainer and no YAML. Bad settings raise
``ValueError``/``OSError`` from llm-torch's code, which :func:`llm_torch.cli.main` prints as one
``llm-torch: error: ...`` line.
"""

import argparse
from pathlib import Path

from llm_torch.tokenizer.base import Tokenizer
from llm_torch.tokenizer.compare import (
    REFERENCE_TOKENIZERS,
    count_tokens,
    format_table,
    load_references,
)
from llm_torch.tokenizer.factory import get_tokenizer
from llm_torch.tokenizer.train import GPT4_PATTERN, RANKS_NAME, train_tokenizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-torch train-tokenizer",
        description="Train a byte-level BPE (tiktoken format) on a source, or with --eval, "
        "print bytes per token of a trained tokenizer next to GPT-2's, GPT-4's and GPT-4o's.",
    )
    parser.add_argument(
        "--source",
        required=True,
        help="text to train on (or, with --eval, to measure on): shakespeare, a file, a "
        "folder, a glob, JSON Lines...",
    )
    parser.add_argument(
        "--vocab_size",
        type=int,
        help="total ids: 256 bytes + merges + special tokens (e.g. 32768)",
    )
    parser.add_argument("--out", help=f"output folder for {RANKS_NAME} and its .json sidecar")
    parser.add_argument(
        "--pattern", default=GPT4_PATTERN, help="pre-tokenizer regex (default: GPT-4's)"
    )
    parser.add_argument(
        "--special_tokens",
        nargs="+",
        default=[],
        metavar="TOKEN",
        help="special tokens to reserve besides <|endoftext|>, e.g. '<|user|>' '<|assistant|>'",
    )
    parser.add_argument(
        "--max_chars", type=int, help="use at most this many characters of the source"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="shuffle the source's files with this seed before the --max_chars cut "
        "(default: corpus order)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace files in --out")
    parser.add_argument(
        "--eval",
        metavar="DIR",
        help="instead of training: bytes per token of DIR/tokenizer.model (or a tokenizer "
        "spec) on --source",
    )
    parser.add_argument(
        "--compare",
        nargs="*",
        default=list(REFERENCE_TOKENIZERS),
        metavar="NAME",
        help="tokenizers to compare with (default: gpt2 cl100k_base o200k_base; those whose "
        "file is not cached are listed as not available)",
    )
    return parser


def _load(target: str) -> Tokenizer:
    """A folder or ranks file from ``train-tokenizer``, a ``tokenizer.json``, or any spec."""
    path = Path(target).expanduser()
    if path.suffix == ".json" and path.is_file():
        return get_tokenizer(f"hf:{path}")
    if path.exists():
        return get_tokenizer(f"tiktoken:{path}")
    return get_tokenizer(target)


def _evaluate(args: argparse.Namespace) -> None:
    tokenizers: dict[str, Tokenizer | str] = {args.eval: _load(args.eval)}
    tokenizers.update(load_references([name for name in args.compare if name != args.eval]))
    rows = count_tokens(args.source, tokenizers, args.max_chars)
    print(f"Bytes per token on {args.source!r} ({rows[0].text_bytes:,} bytes):")
    print(format_table(rows))


def train_tokenizer_command(argv: list[str]) -> None:
    """Run ``llm-torch train-tokenizer``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.eval is not None:
        if args.out is not None or args.vocab_size is not None:
            parser.error("--eval measures an existing tokenizer: drop --out and --vocab_size")
        _evaluate(args)
        return
    if args.out is None or args.vocab_size is None:
        parser.error("training needs --vocab_size and --out (or pass --eval DIR to measure)")
    result = train_tokenizer(
        args.source,
        args.vocab_size,
        args.out,
        pattern=args.pattern,
        special_tokens=args.special_tokens,
        max_chars=args.max_chars,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    specials = ", ".join(
        f"{token} = {token_id}" for token, token_id in result.special_tokens.items()
    )
    print(
        f"Wrote {result.path} and {result.path.name}.json: {result.vocab_size:,} ids "
        f"({result.vocab_size - len(result.special_tokens):,} ranks; special: {specials}) from "
        f"{result.stats.bytes / 1e6:,.1f} MB in {result.seconds:.1f} s.\n"
        f"Use it with --data.tokenizer tiktoken:{result.path}"
    )
