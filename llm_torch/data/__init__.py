"""From raw text to cached token files and training windows.

``TextDataModule`` is the entry point; the modules below it are usable on their own:
``sources`` (source strings to documents), ``shakespeare`` (the built-in corpus), ``boundaries``
(tokenization-safe cuts), ``splits`` (train/validation pieces), ``cache`` (atomic token caches)
and ``windows`` (training and validation samples). Tokenization throughput is measured by
:mod:`llm_torch.bench.data`.
"""

from llm_torch.data.datamodule import TextDataModule
from llm_torch.data.errors import DataError

__all__ = ["DataError", "TextDataModule"]
