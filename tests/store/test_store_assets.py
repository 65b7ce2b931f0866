"""The content-addressed store: atomic, idempotent, self-verifying, and closed to path tricks."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from musicops.config import get_settings
from musicops.store.assets import AssetCorruptError, AssetStore, StoredFile, open_asset_store


def test_put_read_verify(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "assets")
    data = b"RIFF....WAVEfmt fake audio"
    stored = store.put(data, "wav")
    sha = hashlib.sha256(data).hexdigest()
    assert stored == StoredFile(sha256=sha, path=store.path_for(sha, "wav"), size=len(data), fmt="wav")
    assert stored.path.relative_to(store.root).parts == (sha[:2], sha[2:4], f"{sha}.wav")
    assert store.exists(sha, "wav") and not store.exists(sha, "flac")
    assert store.read(sha, "wav") == data
    assert store.verify(sha, "wav")
    assert not store.verify(sha, "flac")
    with pytest.raises(FileNotFoundError):
        store.read(sha, "flac")


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    first = store.put(b"same bytes", "flac")
    mtime = first.path.stat().st_mtime_ns
    second = store.put(b"same bytes", "flac")
    assert first == second
    assert first.path.stat().st_mtime_ns == mtime  # not rewritten
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [first.path.name]


def test_put_replaces_a_truncated_copy(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    stored = store.put(b"0123456789", "ogg")
    stored.path.write_bytes(b"01234")
    assert not store.verify(stored.sha256, "ogg")
    assert store.put(b"0123456789", "ogg") == stored
    assert store.read(stored.sha256, "ogg") == b"0123456789"


def test_corruption_is_detected(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    stored = store.put(b"\x00" * 1000, "wav")
    stored.path.write_bytes(b"\x01" + b"\x00" * 999)  # same size, different content
    assert not store.verify(stored.sha256, "wav")
    with pytest.raises(AssetCorruptError, match="corrupt"):
        store.read(stored.sha256, "wav")
    # Same-size corruption is not caught by put's size check; verify/read are the authority.


def test_sweep_partials_removes_only_stale_temp_files(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    kept = store.put(b"real asset", "wav")
    stale = kept.path.parent / ".tmp-killedwriter.wav"
    stale.write_bytes(b"half a fi")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = kept.path.parent / ".tmp-inflight.wav"  # a writer in another process, still running
    fresh.write_bytes(b"in progress")
    assert store.sweep_partials() == 1
    assert not stale.exists() and fresh.exists() and kept.path.exists()
    assert store.sweep_partials(min_age_s=0) == 1
    assert not fresh.exists()
    assert store.sweep_partials() == 0
    assert store.read(kept.sha256, "wav") == b"real asset"


def test_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    for i in range(5):
        store.put(f"clip {i}".encode(), "mp3")
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize(
    ("sha", "fmt"),
    [
        ("../x", "wav"),
        ("../" + "a" * 61, "wav"),
        ("g" * 64, "wav"),  # not hex
        ("A" * 64, "wav"),  # uppercase
        ("a" * 63, "wav"),
        ("a" * 64 + "\n", "wav"),
        ("a" * 64, "exe"),
        ("a" * 64, "wav/../../x"),
        ("a" * 64, "WAV"),
        ("a" * 64, ""),
    ],
)
def test_path_for_rejects_untrusted_strings(tmp_path: Path, sha: str, fmt: str) -> None:
    store = AssetStore(tmp_path)
    with pytest.raises(ValueError):
        store.path_for(sha, fmt)
    with pytest.raises(ValueError):
        store.exists(sha, fmt)


def test_put_rejects_bad_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        AssetStore(tmp_path).put(b"x", "sh")


def test_open_asset_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_home: Path) -> None:
    default = open_asset_store(get_settings())
    assert default.root == (state_home / "assets").resolve()

    monkeypatch.setenv("MUSICOPS_ASSET_STORE", str(tmp_path / "plain"))
    assert open_asset_store(get_settings()).root == tmp_path / "plain"

    monkeypatch.setenv("MUSICOPS_ASSET_STORE", (tmp_path / "with space").as_uri())
    assert open_asset_store(get_settings()).root == tmp_path / "with space"

    monkeypatch.setenv("MUSICOPS_ASSET_STORE", "s3://bucket/prefix")
    s3 = open_asset_store(get_settings())  # no request until first use
    assert (type(s3).__name__, s3.url) == ("S3AssetStore", "s3://bucket/prefix")  # type: ignore[attr-defined]
    for bad in ("s3://Bad_Bucket/x", "s3://bucket/../x", "s3://bucket/p?x=1", "s3:///prefix"):
        monkeypatch.setenv("MUSICOPS_ASSET_STORE", bad)
        with pytest.raises(ValueError, match="asset store"):
            open_asset_store(get_settings())

    monkeypatch.setenv("MUSICOPS_ASSET_STORE", "file://otherhost/data")
    with pytest.raises(ValueError):
        open_asset_store(get_settings())
