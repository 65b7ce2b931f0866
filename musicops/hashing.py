"""One streamed file hash for every content address (assets, manifests, catalogs, prompts, imports),
and one directory hash (model directories, embedder weights)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so multi-GB weights never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def directory_sha256(directory: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]] | None = None,
                     *, name_separator: bytes = b"\n") -> str:
    """Hex sha256 over a directory's files (all of them, or `files` under it), in sorted order.

    Each file contributes its relative POSIX name, a newline, then its content, so renaming a file
    changes the hash, and so does moving bytes from one file to the next. `name_separator=b""` is the
    framing local model directories were identified by before this became the one directory hash:
    their identity is part of every cache key, so it must not change (see `model_identity`).
    """
    root = Path(directory)
    chosen = sorted(Path(p) for p in files) if files is not None else sorted(
        p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in chosen:
        digest.update(path.relative_to(root).as_posix().encode() + name_separator)
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
