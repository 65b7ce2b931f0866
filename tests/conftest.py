"""Test-wide settings: offline hub, one torch thread, a fresh state directory per test.

On a busy 2-core machine two torch threads turned a 0.5 s training loop into 40 s, so every
test (and every kfp.local subprocess, through MUSICOPS_TORCH_THREADS) uses one thread.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["MUSICOPS_TORCH_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own MUSICOPS_HOME (MLflow sqlite store, kfp root, datasets)."""
    home = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("MUSICOPS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic music dataset shared by the training, registry and pipeline tests."""
    from musicops.datasets.synth import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n=6, seed=0, duration_s=1.5)
    return out


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL server on 127.0.0.1 (tests/helpers/postgres.py); `make test` requires it."""
    from helpers.postgres import postgres_server

    with postgres_server() as server:
        if server is None:
            message = "PostgreSQL is not installed (make test installs Debian's postgresql)"
            if os.environ.get("MUSICOPS_REQUIRE_POSTGRES") == "1":
                pytest.fail(message)
            pytest.skip(message)
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each store test runs on the embedded SQLite file and on a real PostgreSQL database (slow tier)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'store.db'}"
    return request.getfixturevalue("postgres").create_database()
