"""Content-addressed asset store: audio files named by their sha256.

Naming by content makes writes idempotent (the same bytes always land on the same path), lets
readers verify what they serve, and lets the batch runner and the API share one directory without
coordination. Writes are atomic (temp file in the target directory, fsync, rename), so a killed
writer leaves at most a `.tmp-` file that `sweep_partials` removes, never a truncated asset.

Two backends share one interface (`AssetBackend`): this local directory and an S3-compatible bucket
(`musicops.store.s3`, MUSICOPS_ASSET_STORE=s3://bucket/prefix). Callers use `read`, `local_file` (a
local path for the duration of a `with`, a temporary copy for S3) and `presigned_url` (None for a
local store: the API signs its own URLs then), never a path they assume is on this disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from musicops.errors import MusicopsError
from musicops.hashing import file_sha256
from musicops.store.files import atomic_write

if TYPE_CHECKING:
    from musicops.audio.io import Audio

ALLOWED_FORMATS = frozenset({"wav", "flac", "ogg", "mp3"})
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}
TEMP_PREFIX = ".tmp-"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class AssetCorruptError(MusicopsError, ValueError):
    """A stored file no longer matches its name's hash (disk fault, manual edit, partial copy)."""


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    path: PurePath  # a local store's file (a Path); for S3 the object key (for messages)
    size: int
    fmt: str


def asset_name(sha256: str, fmt: str) -> str:
    """The relative name "ab/cd/<sha256>.<fmt>", validating both: request strings never become paths
    or object keys unchecked. The two fan-out levels keep directories (and key listings) small."""
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 (64 lowercase hex): {sha256!r}")
    if not isinstance(fmt, str) or fmt not in ALLOWED_FORMATS:
        raise ValueError(f"unsupported asset format {fmt!r}; allowed: {sorted(ALLOWED_FORMATS)}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{fmt}"


def check_content(data: bytes, sha256: str, where: str) -> bytes:
    """`data` if it hashes to `sha256`, else AssetCorruptError naming `where`."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise AssetCorruptError(f"asset {where} is corrupt: content hashes to {actual}, expected {sha256}")
    return data


class AssetBackend:
    """What every asset store offers; subclasses implement storage, this class what follows from it."""

    def put(self, data: bytes, fmt: str) -> StoredFile:
        raise NotImplementedError

    def exists(self, sha256: str, fmt: str) -> bool:
        raise NotImplementedError

    def read(self, sha256: str, fmt: str) -> bytes:
        """The bytes, hash-checked (AssetCorruptError); FileNotFoundError for a missing asset."""
        raise NotImplementedError

    def write_problem(self) -> str | None:
        raise NotImplementedError

    def sweep_partials(self, min_age_s: float = 60.0) -> int:
        raise NotImplementedError

    def describe(self, sha256: str, fmt: str) -> str:
        """Where the asset lives, for messages."""
        raise NotImplementedError

    def verify(self, sha256: str, fmt: str) -> bool:
        """True when the asset exists and its content still hashes to its name."""
        try:
            self.read(sha256, fmt)
        except (FileNotFoundError, AssetCorruptError):
            return False
        return True

    def read_audio(self, sha256: str, fmt: str) -> Audio:
        """Decoded audio of a stored file: hash-checked like `read`, then `read_audio`'s checks."""
        from musicops.audio.io import decode_audio

        return decode_audio(self.read(sha256, fmt), self.describe(sha256, fmt), fmt)

    @contextlib.contextmanager
    def local_file(self, sha256: str, fmt: str) -> Iterator[Path]:
        """A local file holding the asset for the duration of the `with` (libraries that want a path:
        soundfile, shutil). The default writes a hash-checked temporary copy, removed afterwards."""
        data = self.read(sha256, fmt)
        fd, name = tempfile.mkstemp(prefix="musicops-asset-", suffix=f".{fmt}")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def presigned_url(self, sha256: str, fmt: str, ttl_s: int, filename: str | None = None) -> str | None:
        """A URL anyone holding it may GET the asset from until `ttl_s` passes, served by the store
        itself; None when the store cannot make one (a local directory: the API serves the bytes)."""
        return None


class AssetStore(AssetBackend):
    """Files at root/ab/cd/<sha256>.<fmt> in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"AssetStore({str(self.root)!r})"

    def path_for(self, sha256: str, fmt: str) -> Path:
        """Map (hash, format) to a path, validating both: request strings never become paths unchecked."""
        return self.root / asset_name(sha256, fmt)

    def describe(self, sha256: str, fmt: str) -> str:
        return str(self.path_for(sha256, fmt))

    @contextlib.contextmanager
    def local_file(self, sha256: str, fmt: str) -> Iterator[Path]:
        """The stored file itself (no copy); FileNotFoundError when it is missing."""
        path = self.path_for(sha256, fmt)
        if not path.is_file():
            raise FileNotFoundError(2, "asset missing from the store", str(path))
        yield path

    def put(self, data: bytes, fmt: str) -> StoredFile:
        """Store bytes atomically; storing the same bytes again is a no-op (a bad copy is replaced)."""
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, fmt)
        try:
            if path.stat().st_size == len(data):
                return StoredFile(sha, path, len(data), fmt)
            # Same name, wrong size: a damaged copy. We hold the right bytes, so rewrite it.
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0644: a server running as another user must be able to read assets.
        atomic_write(path, data, mode=0o644, prefix=TEMP_PREFIX, suffix=f".{fmt}")
        return StoredFile(sha, path, len(data), fmt)

    def exists(self, sha256: str, fmt: str) -> bool:
        return self.path_for(sha256, fmt).is_file()

    def read(self, sha256: str, fmt: str) -> bytes:
        """Return the bytes after checking them against the name; raises AssetCorruptError if they differ."""
        path = self.path_for(sha256, fmt)
        data = path.read_bytes()  # FileNotFoundError for a missing asset
        return check_content(data, sha256, str(path))

    def verify(self, sha256: str, fmt: str) -> bool:
        """True when the file exists and its content still hashes to its name (streams, no full read)."""
        path = self.path_for(sha256, fmt)
        try:
            return file_sha256(path) == sha256
        except FileNotFoundError:
            return False

    def write_problem(self) -> str | None:
        """Why a file cannot be written in the store right now (None when it can): a probe file is
        created, written and removed. For readiness, so a store gone read-only stops traffic."""
        try:
            fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}probe-", dir=self.root)
            try:
                os.write(fd, b"probe")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            return f"asset store {self.root} is not writable: {exc.strerror or exc}"
        return None

    def sweep_partials(self, min_age_s: float = 60.0) -> int:
        """Remove temp files left by killed writers; returns how many.

        Only files older than `min_age_s` go, so a sweep at startup cannot delete the temp file of a
        writer that is still running in another process (the API while a batch starts, say).
        """
        cutoff = time.time() - min_age_s
        removed = 0
        for tmp in self.root.rglob(f"{TEMP_PREFIX}*"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished or swept by someone else meanwhile
        return removed


def asset_store_problem(settings: Any) -> str | None:
    """Why the configured store cannot be opened and written (None when it can), in one line naming
    the path: a start-up check, so a bad path fails the start clearly instead of every request."""
    try:
        store = open_asset_store(settings)
    except (OSError, ValueError) as exc:
        path = getattr(exc, "filename", None)
        if isinstance(exc, FileExistsError | NotADirectoryError) and path:
            return f"asset store {path} is not a directory (a file is in the way on that path)"
        if isinstance(exc, OSError):
            return f"asset store {path or '?'} cannot be created: {exc.strerror or exc}"
        return str(exc)
    return store.write_problem()


def open_asset_store(settings: Any) -> AssetBackend:
    """The asset store the settings name: local `assets_dir` by default, "file:///dir" or a path, or
    "s3://bucket/prefix" (`musicops.store.s3.S3AssetStore`, endpoint and credentials from settings)."""
    url = getattr(settings, "asset_store_url", None)
    if not url:
        return AssetStore(settings.assets_dir)
    if "://" not in url:
        return AssetStore(Path(url))
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file:// asset store must be local, got host {parsed.netloc!r} in {url!r}")
        return AssetStore(Path(unquote(parsed.path)))
    if scheme == "s3":
        from musicops.store.s3 import S3AssetStore

        return S3AssetStore.from_settings(url, settings)
    raise ValueError(f"unsupported asset store URL {url!r}: use a path, file:///path or s3://bucket/prefix")
