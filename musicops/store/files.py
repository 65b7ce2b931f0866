"""Crash-safe files: atomic writes and the state directory's secrets.

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
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".part"
MIN_SECRET_BYTES = 32


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


def _create_temp(directory: Path, prefix: str, suffix: str, mode: int | None) -> Path:
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
    tmp = _create_temp(path.parent, f".{path.name}." if prefix is None else prefix, suffix, mode)
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


def load_secret(path: str | os.PathLike[str] | None, env_name: str, *,
                min_bytes: int = MIN_SECRET_BYTES) -> bytes:
    """A signing secret: the env var `env_name` if set, else the file at `path` (created 0600 with a
    random secret when missing), else (no path) a random one for this process only.

    One rule for every signer (asset URLs, MOS forms): a secret shorter than `min_bytes` is refused
    rather than used, and a secret file readable by others is restricted to 0600 with a warning.
    The file is written complete under a temp name and hard-linked into place, so processes
    starting at once agree on one secret and nobody reads a half-written one.
    """
    value = os.environ.get(env_name)
    if value:
        if len(value.encode()) < min_bytes:
            raise ValueError(f"{env_name} is too short: use at least {min_bytes} random bytes")
        return value.encode()
    if path is None:
        return secrets.token_bytes(max(min_bytes, 32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _read_secret(path, min_bytes)
    except FileNotFoundError:
        pass
    tmp = _create_temp(path.parent, f".tmp-{path.name}-", "", 0o600)
    try:
        with open(tmp, "wb") as handle:
            handle.write(secrets.token_urlsafe(48).encode())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its secret
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path, min_bytes)


def _read_secret(path: Path, min_bytes: int) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("secret file %s was readable by others (mode %o); restricting it to 0600", path, mode)
        os.chmod(path, 0o600)
    data = path.read_bytes().strip()
    if len(data) < min_bytes:
        raise ValueError(f"secret file {path} is empty or shorter than {min_bytes} bytes; delete it to regenerate")
    return data
