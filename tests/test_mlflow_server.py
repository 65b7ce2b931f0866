"""`MLFLOW_TRACKING_URI` pointing at a real MLflow server works unchanged (server on 127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.servers import mlflow_serve

pytestmark = pytest.mark.slow  # an MLflow server process and a fine-tune


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    with mlflow_serve(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server.url


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
