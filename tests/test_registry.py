"""Fine-tune -> MLflow run -> registered version -> load by version and alias (real MLflow, sqlite)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from musicops.config import get_settings
from musicops.models.base import GenerationParams
from musicops.models.loading import load_model, resolve_model
from musicops.registry import ModelNotFoundError, configure_mlflow
from musicops.training.finetune import FineTuneConfig
from musicops.training.run import fine_tune, register_model

pytestmark = pytest.mark.slow  # the module fixture fine-tunes and registers (~10 s); every test uses it


@pytest.fixture(scope="module")
def registered(synth_dir, tmp_path_factory):
    from musicops.datasets.ingest import ingest

    settings = get_settings(tmp_path_factory.mktemp("registry-state"))
    version = ingest(synth_dir, "unit-set", settings).version
    outcome = fine_tune(version.ref, "musicgen-tiny", FineTuneConfig(steps=3, segment_s=1.0), settings)
    number = register_model(outcome.model_uri, "unit-model", outcome.tags, settings)
    return settings, version, outcome, number


def test_version_carries_provenance_tags(registered) -> None:
    from mlflow import MlflowClient

    settings, dataset, outcome, number = registered
    configure_mlflow(settings)
    client = MlflowClient()
    version = client.get_model_version("unit-model", number)
    assert version.tags["musicops.dataset_hash"] == dataset.dataset_hash
    assert version.tags["musicops.dataset"] == dataset.ref
    assert version.tags["musicops.base_model"] == "musicgen-tiny"
    assert version.tags["musicops.seed"] == "0"
    assert version.tags["musicops.code_version"]
    assert "licence" in " ".join(version.tags)
    run = client.get_run(outcome.run_id)
    assert run.data.params["base_model"] == "musicgen-tiny"
    history = client.get_metric_history(outcome.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert "loss_curve.png" in [a.path for a in client.list_artifacts(outcome.run_id)]
    offline_runs = list(settings.wandb_dir.glob("wandb/offline-run-*"))
    assert offline_runs, "W&B mirrors the run offline inside the state directory"


def test_load_by_version_and_alias_matches_the_trained_weights(registered) -> None:
    from mlflow import MlflowClient

    from musicops.models.musicgen import TransformersMusicGen

    settings, _, outcome, number = registered
    configure_mlflow(settings)
    MlflowClient().set_registered_model_alias("unit-model", "champion", number)
    resolved = resolve_model("models:/unit-model@champion", settings)
    assert (resolved.kind, resolved.version, resolved.run_id) == ("registry", number, outcome.run_id)
    params = GenerationParams(duration_s=0.5)
    trained = TransformersMusicGen.from_dir(outcome.model_dir).generate(["calm piano"], params, seed=5)[0]
    by_alias = load_model("models:/unit-model@champion", settings)
    assert by_alias.info.version == number
    assert np.array_equal(by_alias.generate(["calm piano"], params, seed=5)[0], trained)


def test_pyfunc_flavour_generates_wav(registered) -> None:
    import mlflow

    settings, _, _, number = registered
    configure_mlflow(settings)
    model = mlflow.pyfunc.load_model(f"models:/unit-model/{number}")
    [encoded] = model.predict([{"prompt": "dreamy pad", "seed": 2, "duration_s": 0.5}])
    audio, rate = sf.read(io.BytesIO(base64.b64decode(encoded)))
    assert rate == 32000 and abs(len(audio) - 16000) <= 1


def test_unknown_models_fail_clearly(registered) -> None:
    settings = registered[0]
    with pytest.raises(ModelNotFoundError, match="no registered model named 'nope'"):
        resolve_model("models:/nope/1", settings)
    with pytest.raises(ModelNotFoundError, match="has no version 99"):
        resolve_model("models:/unit-model/99", settings)
    with pytest.raises(ModelNotFoundError, match="has no alias 'ghost'"):
        resolve_model("models:/unit-model@ghost", settings)
    with pytest.raises(ValueError, match="unknown model reference"):
        resolve_model("/no/such/dir", settings)
    with pytest.raises(ValueError, match="not a model URI"):
        resolve_model("models:/a/b/c", settings)


def test_each_versions_weights_exist_once_on_disk(registered, tmp_path) -> None:
    """Import + fine-tune + registration + loading both versions: every weights file in the state
    directory is stored once (no model-cache copy of a local MLflow store, no run-folder copy)."""
    import hashlib

    from musicops.models.musicgen import TransformersMusicGen
    from musicops.training.run import import_model_dir

    settings, _, outcome, number = registered
    imported = import_model_dir(TransformersMusicGen.from_preset(seed=3).save(tmp_path / "weights"), "unit-model",
                                settings)
    for version in (number, imported):
        load_model(f"models:/unit-model/{version}", settings)
    assert outcome.model_dir.is_relative_to(settings.mlflow_artifacts)  # the logged copy, not the run folder
    hashes: dict[str, list[str]] = {}
    for path in settings.home.rglob("*.safetensors"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        hashes.setdefault(digest, []).append(str(path.relative_to(settings.home)))
    assert len(hashes) >= 2, hashes  # the fine-tuned and the imported weights
    assert all(len(paths) == 1 for paths in hashes.values()), hashes
    assert not any(settings.model_cache.rglob("*.safetensors"))


def test_assets_of_a_fine_tuned_version_record_its_training_data(registered, tmp_path) -> None:
    import json as _json

    from musicops.generation.batch import run_batch
    from musicops.generation.planning import BatchOptions

    settings, dataset, outcome, number = registered
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(_json.dumps({"prompt": "warm bass", "duration_s": 0.5, "seed": 1}) + "\n")
    [done] = run_batch(prompts, f"models:/unit-model/{number}", BatchOptions(log_to_mlflow=False), settings).outcomes
    assert done.record.lineage["training_data"] == {
        "dataset": "unit-set", "dataset_version": str(dataset.version), "dataset_hash": dataset.dataset_hash,
        "base_model": "musicgen-tiny", "model": f"models:/unit-model/{number}"}
