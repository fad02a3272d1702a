"""Reading documents: the layer below both tokenizer training and the data pipeline.

A ``source`` string resolves to an ordered ``Corpus`` of documents (``sources``), read from text
and JSON Lines files (``textfiles``), Parquet and Arrow files or Hugging Face datasets
(``tables``), or the built-in plays (``shakespeare``). ``boundaries`` says where text may be cut
without changing its BPE tokenization. Nothing here tokenizes: ``llm_torch.tokenizer`` trains on
corpora and ``llm_torch.data`` turns them into token caches, and this package imports neither.
"""

from llm_torch.corpus.errors import DataError
from llm_torch.corpus.sources import Corpus, resolve_source

__all__ = ["Corpus", "DataError", "resolve_source"]
