"""Atomic writes and secret files: what a reader or a second process may observe."""

from __future__ import annotations

import os
import stat

import pytest

from musicops.signing import load_secret
from musicops.store.files import atomic_path, atomic_write

ENV = "MUSICOPS_TEST_SECRET"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old")
    assert atomic_write(target, "néw\n") == target
    assert target.read_bytes() == "néw\n".encode()
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_mode_is_exact_and_defaults_to_a_plain_open(tmp_path) -> None:
    shared = atomic_write(tmp_path / "shared.json", "{}", mode=0o644)
    assert _mode(shared) == 0o644
    umask = os.umask(0o022)
    os.umask(umask)
    plain = atomic_write(tmp_path / "plain.txt", "x")
    assert _mode(plain) == 0o666 & ~umask


def test_a_failed_writer_leaves_the_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "data.parquet"
    target.write_text("complete")
    with pytest.raises(RuntimeError), atomic_path(target, prefix=".tmp-", suffix=".wav") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-") and tmp.name.endswith(".wav")
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["data.parquet"]


def test_secret_file_is_created_0600_reused_and_restricted(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(ENV, raising=False)
    path = tmp_path / "state" / "secret"
    first = load_secret(path, os.environ.get(ENV), name=ENV)
    assert len(first) >= 48 and _mode(path) == 0o600
    assert load_secret(path, os.environ.get(ENV), name=ENV) == first
    os.chmod(path, 0o644)
    assert load_secret(path, os.environ.get(ENV), name=ENV) == first and _mode(path) == 0o600
    assert "readable by others" in caplog.text
    assert [p.name for p in path.parent.iterdir()] == ["secret"]


def test_secret_rules_env_wins_short_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV, "e" * 40)
    assert load_secret(tmp_path / "secret", os.environ.get(ENV), name=ENV) == b"e" * 40
    assert not (tmp_path / "secret").exists()
    monkeypatch.setenv(ENV, "e" * 31)
    with pytest.raises(ValueError, match="at least 32"):
        load_secret(tmp_path / "secret", os.environ.get(ENV), name=ENV)
    monkeypatch.delenv(ENV)
    (tmp_path / "secret").write_text("short\n")
    with pytest.raises(ValueError, match="delete it to regenerate"):
        load_secret(tmp_path / "secret", os.environ.get(ENV), name=ENV)
    assert load_secret(None, os.environ.get(ENV), name=ENV) != load_secret(None, os.environ.get(ENV), name=ENV)  # no home: per process
