"""From a corpus of documents to cached token files and training windows.

``TextDataModule`` is the entry point; the modules below it are usable on their own:
``splits`` (train/validation pieces), ``encode`` (tokenizing on every core into shards,
resumably), ``cache`` (cache folders: naming, checking, exporting), ``shards`` (llm.c's token
shard format, read and written), ``windows`` (training and validation samples), ``prompts``
(prompt files for ``predict``) and ``prepare`` (``python -m llm_torch.data.prepare``: a cache
made before training). Documents are read by :mod:`llm_torch.corpus` (sources, files, tables,
the built-in corpus, tokenization-safe cuts). Tokenization throughput is measured by
:mod:`llm_torch.bench.data`.
"""

from llm_torch.corpus.errors import DataError
from llm_torch.data.datamodule import TextDataModule

__all__ = ["DataError", "TextDataModule"]
