"""The one exception type for bad data input, from reading a corpus to its token caches."""


class DataError(ValueError):
    """Bad data input: the message names the problem and how to fix it.

    A ``ValueError`` so that callers catching bad-argument errors also catch it; raised before
    anything is written or after a failed write was rolled back, so no half-written cache remains.
    Defined in the corpus layer, which reads the input; ``llm_torch.data`` re-exports it.
    """
