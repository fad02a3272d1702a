"""Benchmarks that print figures: training steps, generation, tokenization.

Run each as a module: ``python -m llm_torch.bench.train``, ``python -m llm_torch.bench.generate``
and ``python -m llm_torch.bench.data`` (``--help`` for options); ``python -m llm_torch.bench.gpu
--out DIR`` runs every GPU figure in one call (train steps, speedrun, decode, a profile).

They are a subpackage of ``llm_torch`` rather than a top-level ``benchmarks/`` folder so that
``python -m`` works wherever llm-torch is installed (an editable checkout, a wheel, a cluster
image) with no ``sys.path`` setup, and so that ruff, mypy and the package's imports check them like
the rest of the code. Nothing in ``llm_torch`` imports them: they cost nothing at import time.
"""
