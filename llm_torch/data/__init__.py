"""From raw text to cached token files and training windows.

``TextDataModule`` is the entry point; the modules below it are usable on their own:
``sources`` (source strings to documents), ``tables`` (Parquet, Arrow and Hugging Face
datasets), ``shakespeare`` (the built-in corpus), ``boundaries`` (tokenization-safe cuts),
``splits`` (train/validation pieces), ``encode`` (tokenizing on every core into shards,
resumably), ``cache`` (cache folders: naming, checking, exporting), ``shards`` (llm.c's token
shard format, read and written), ``windows`` (training and validation samples) and ``prepare``
(``python -m llm_torch.data.prepare``: a cache made before training).
Tokenization throughput is measured by :mod:`llm_torch.bench.data`.
"""

from llm_torch.data.datamodule import TextDataModule
from llm_torch.data.errors import DataError

__all__ = ["DataError", "TextDataModule"]
