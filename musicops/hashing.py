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


def directory_sha256(directory: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]] | None = None) -> str:
    """Hex sha256 over a directory's files (all of them, or `files` under it), in sorted order.

    Each file contributes its relative POSIX name, a newline, then its content, so renaming a file
    changes the hash, and so does moving bytes from one file to the next.
    """
    root = Path(directory)
    chosen = sorted(Path(p) for p in files) if files is not None else sorted(
        p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in chosen:
        digest.update(f"{path.relative_to(root).as_posix()}\n".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
