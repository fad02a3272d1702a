"""Prepare a data cache once, before training: ``python -m llm_torch.data.prepare``.

For corpora that take hours to tokenize, and for many nodes: run this once (on one machine, with
``cache_dir`` on storage every node reads), then start ``llm-torch fit`` with the same data
settings everywhere; every rank finds the cache and nobody tokenizes. An interrupted run resumes
from its last complete shard when started again.

``--config`` reads the ``data:`` section of a training config, so the cache is exactly the one
``fit`` will look for; the other options override it. ``--export DIR`` also writes the cache as
llm.c shards (``<prefix>_train_000000.bin``, ...), for llm.c and modded-nanogpt.
"""

import argparse
import importlib
from pathlib import Path
from typing import Any

from llm_torch.corpus.errors import DataError
from llm_torch.data.datamodule import TextDataModule

OPTIONS: dict[str, type] = {
    "source": str,
    "tokenizer": str,
    "val_source": str,
    "val_fraction": float,
    "cache_dir": str,
    "num_proc": int,
    "shard_tokens": int,
    "text_column": str,
    "hf_name": str,
    "hf_split": str,
    "streaming": bool,
    "block_size": int,
}
"""``TextDataModule`` arguments that this command accepts (the ones that pick the cache)."""


def config_data(path: Path) -> dict[str, Any]:
    """The ``data:`` section of a LightningCLI config (plain or ``init_args`` form).

    Raises:
        DataError: The file cannot be read or has no data section.
    """
    yaml: Any = importlib.import_module("yaml")  # PyYAML, a LightningCLI dependency, has no stubs
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DataError(
            f"Cannot read the config {str(path)!r}: {err}. Fix: pass a YAML file."
        ) from None
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, dict) and isinstance(data.get("init_args"), dict):
        data = data["init_args"]
    if not isinstance(data, dict):
        raise DataError(f"The config {str(path)!r} has no data: section. Fix: add one.")
    return {key: value for key, value in data.items() if key in OPTIONS}


def main(argv: list[str] | None = None) -> None:
    """Parses options, prepares (or finds) the cache, optionally exports it, prints its folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="a training config; its data: section")
    for name, kind in OPTIONS.items():
        if kind is bool:
            parser.add_argument(f"--{name}", action="store_true", default=None)
        else:
            parser.add_argument(f"--{name}", type=kind, default=None)
    parser.add_argument("--export", type=Path, help="also write llm.c shards into this folder")
    parser.add_argument("--prefix", default="llm_torch", help="file name prefix of --export")
    args = parser.parse_args(argv)
    options = config_data(args.config) if args.config else {}
    options |= {k: v for k, v in vars(args).items() if k in OPTIONS and v is not None}
    data = TextDataModule(**options)
    data.prepare_data()
    print(data.cache_path)
    if args.export:
        for path in data.export_shards(str(args.export), args.prefix):
            print(path)


if __name__ == "__main__":
    main()
