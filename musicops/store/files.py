"""Crash-safe files: atomic writes (the state directory's secrets use them: `musicops.signing`).

Every file a reader may open while it is being produced (assets, manifests, catalog versions,
reports, checkpoints, exports) is written under a temp name in the target's own directory, flushed
to disk and renamed over the target: a reader sees the old file or the new one, never half of one,
and a killed writer leaves only a temp file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".part"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Persist a rename: without it a crash can forget the new directory entry (POSIX only)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_temp(directory: Path, prefix: str, suffix: str, mode: int | None) -> Path:
    """A new empty file; with `mode` None its permissions are a plain `open()`'s (0666 less umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666 if mode is None else mode)
        except FileExistsError:
            continue
        try:
            if mode is not None:
                os.fchmod(fd, mode)  # exact, whatever the umask
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"no free temp name in {directory}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None, durable: bool = True,
                prefix: str | None = None, suffix: str = TEMP_SUFFIX) -> Iterator[Path]:
    """Yield a temp path next to `path` for a library to write (soundfile, pandas, torch); on a
    clean exit it replaces `path`, on an exception it is removed and `path` is untouched.

    `durable` fsyncs the file before the rename and the directory after it, so a power cut cannot
    leave an empty file under the final name. `mode` sets exact permissions (e.g. 0o644 for files
    another user serves); None gives a plain `open()`'s.
    """
    path = Path(path)
    tmp = create_temp(path.parent, f".{path.name}." if prefix is None else prefix, suffix, mode)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int | None = None,
                 durable: bool = True, prefix: str | None = None, suffix: str = TEMP_SUFFIX) -> Path:
    """Write bytes (or UTF-8 text) to `path` atomically; see `atomic_path` for the options."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path = Path(path)
    with atomic_path(path, mode=mode, durable=durable, prefix=prefix, suffix=suffix) as tmp:
        tmp.write_bytes(payload)
    return path
