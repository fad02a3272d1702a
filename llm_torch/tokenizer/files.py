"""Reading tokenizer files named in specs: absolute paths and content hashes.

A spec that names a file records the file's SHA-256, so a checkpoint or data cache that is rebuilt
from the spec notices when the file at that path has changed (its token ids would no longer mean
the same thing) instead of silently using different ids.
"""

import hashlib
import os
from pathlib import Path


def resolve_file(path: str | os.PathLike[str], kind: str, default_name: str | None = None) -> str:
    """Return the absolute path of a tokenizer file, so specs work from any working directory.

    Args:
        path: The file, or (when ``default_name`` is given) a directory holding it.
        kind: What the file is, for the error message (e.g. ``"tiktoken BPE ranks"``).
        default_name: File name to look for when ``path`` is a directory.

    Raises:
        FileNotFoundError: No such file.
    """
    resolved = Path(path).expanduser().resolve()
    if default_name is not None and resolved.is_dir():
        resolved = resolved / default_name
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{kind} file {os.fspath(path)!r} does not exist (resolved to {str(resolved)!r}). "
            "Fix the path in the tokenizer spec."
        )
    return str(resolved)


def read_checked(path: str, sha256: str | None) -> tuple[bytes, str]:
    """Read ``path``, returning its bytes and SHA-256 hex digest.

    Args:
        path: File to read.
        sha256: Expected digest from a saved spec; ``None`` accepts any content.

    Raises:
        ValueError: The content does not match ``sha256``.
    """
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and sha256 != digest:
        raise ValueError(
            f"Tokenizer file {path!r} has changed since this spec was saved (sha256 {sha256}, now "
            f"{digest}): token ids made with the old file would mean different text. Restore the "
            "original file, or drop 'sha256' from the spec and rebuild any data cache made with it."
        )
    return data, digest
