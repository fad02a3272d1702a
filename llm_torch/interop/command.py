"""``llm-torch export``: a training checkpoint to a Hugging Face ``save_pretrained`` folder.

The weights go through :func:`llm_torch.interop.hf.to_hf`; the tokenizer goes along as a
``tokenizer.json`` where it has one or can be converted to one.
"""

import argparse
import shutil
import sys
from pathlib import Path

from llm_torch.engine.checkpoint import load_checkpoint
from llm_torch.interop.hf import to_hf
from llm_torch.tokenizer import TiktokenFileTokenizer, TokenizerUnavailableError
from llm_torch.tokenizer.hf_convert import write_tokenizer_json


def export_command(argv: list[str]) -> None:
    """Run ``llm-torch export``: a checkpoint to a Hugging Face ``save_pretrained`` folder."""
    parser = argparse.ArgumentParser(
        prog="llm-torch export",
        description="Write a checkpoint as a Hugging Face folder (config.json, model.safetensors).",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by `llm-torch fit`")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)

    model, tokenizer = load_checkpoint(args.ckpt_path)
    eot = tokenizer.eot_id if tokenizer is not None else None
    to_hf(model, eos_token_id=eot).save_pretrained(args.out)
    if tokenizer is not None and tokenizer.spec.get("name") == "hf":
        shutil.copy(tokenizer.spec["path"], Path(args.out) / "tokenizer.json")
    elif isinstance(tokenizer, TiktokenFileTokenizer):
        try:  # the weights are written: a tokenizer that cannot be converted only loses its file
            write_tokenizer_json(tokenizer, args.out)
        except (ValueError, TokenizerUnavailableError) as err:
            print(f"warning: no tokenizer.json written: {err}", file=sys.stderr)
    print(f"Wrote {args.out}: load it with transformers.AutoModelForCausalLM.from_pretrained.")
