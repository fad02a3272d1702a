"""The one exception type of the data pipeline."""


class DataError(ValueError):
    """Bad data input: the message names the problem and how to fix it.

    A ``ValueError`` so that callers catching bad-argument errors also catch it; raised before
    anything is written or after a failed write was rolled back, so no half-written cache remains.
    """
