"""Shared fixtures: an isolated MUSICOPS_HOME and a tiny synthetic dataset (rendered once)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from musicops.config import Settings, get_settings
from musicops.datasets.synth import synthesize


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    return get_settings()


@pytest.fixture(scope="session")
def _tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    synthesize(out, n=3, seed=11, duration_s=1.0)
    return out


@pytest.fixture
def tiny_dataset(_tiny_synth: Path, tmp_path: Path) -> Path:
    """A fresh, writable copy of three 1-second captioned clips."""
    target = tmp_path / "tiny"
    shutil.copytree(_tiny_synth, target)
    return target
