"""`MLFLOW_TRACKING_URI` pointing at a real MLflow server works unchanged (server on 127.0.0.1)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(mlflow_exe), "server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_fine_tune_register_and_load_through_a_server(mlflow_server, synth_dir, monkeypatch, tmp_path) -> None:
    from mlflow import MlflowClient

    from musicops.config import get_settings
    from musicops.datasets.ingest import ingest
    from musicops.models.base import GenerationParams
    from musicops.models.loading import load_model
    from musicops.models.musicgen import TransformersMusicGen
    from musicops.registry import configure_mlflow
    from musicops.training.finetune import FineTuneConfig
    from musicops.training.run import fine_tune, register_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = get_settings()
    assert settings.mlflow_tracking_uri == mlflow_server
    dataset = ingest(synth_dir, "server-set", settings).version
    outcome = fine_tune(dataset.ref, "musicgen-tiny", FineTuneConfig(steps=2, segment_s=1.0), settings)
    version = register_model(outcome.model_uri, "server-model", outcome.tags, settings)
    assert not settings.mlflow_db.exists(), "nothing may go to the local sqlite store"

    configure_mlflow(settings)
    client = MlflowClient()
    client.set_registered_model_alias("server-model", "champion", version)
    assert client.get_model_version("server-model", version).tags["musicops.dataset_hash"] == dataset.dataset_hash
    params = GenerationParams(duration_s=0.5)
    served = load_model("models:/server-model@champion", settings).generate(["calm"], params, seed=1)[0]
    local = TransformersMusicGen.from_dir(outcome.model_dir).generate(["calm"], params, seed=1)[0]
    assert np.array_equal(served, local)
