"""kfp components for the fine-tune pipeline: ingest -> validate -> fine-tune -> register.

Each is a few lines: unpack artifacts, call one library function, record outputs. Imports live in
the function bodies because kfp ships each body to its own process (or container on a cluster).

The validated `manifest` artifact is a directory: `manifest.parquet` whose `path` column is relative
to the artifact (`audio/00000-name.wav`) and the audio itself under `audio/`, so the training step
reads only what kfp downloaded for it, never the host folder ingest scanned.
"""

# No `from __future__ import annotations` here: kfp reads the real annotation objects.
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from musicops.components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def ingest_dataset(source_dir: str, musicops_home: str, candidate: Output[Dataset]):
    """Scan a folder of audio + captions into a candidate manifest; any bad file fails the step."""
    from musicops.components.runtime import component_settings
    from musicops.datasets.ingest import scan_to_candidate

    component_settings(musicops_home)
    rows = scan_to_candidate(source_dir, candidate.path)
    candidate.metadata["n_rows"] = rows


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def validate_dataset(candidate: Input[Dataset], name: str, source_dir: str, musicops_home: str,
                     manifest: Output[Dataset], report: Output[HTML]):
    """Great Expectations validation; on success the manifest is published as a new version and handed
    on with its audio inside the artifact (paths relative to it)."""
    import os
    import shutil

    import pandas as pd

    from musicops.components.runtime import component_settings
    from musicops.datasets.ingest import validate_and_publish

    settings = component_settings(musicops_home)
    os.makedirs(os.path.join(manifest.path, "audio"), exist_ok=True)
    table = os.path.join(manifest.path, "manifest.parquet")
    version = validate_and_publish(candidate.path, name, source_dir, settings, table, report.path)
    frame = pd.read_parquet(table, engine="pyarrow")
    relative = []
    for number, source in enumerate(frame["path"]):
        relative.append(f"audio/{number:05d}-{os.path.basename(str(source))}")
        shutil.copyfile(str(source), os.path.join(manifest.path, relative[-1]))
    frame["path"] = relative
    frame.to_parquet(table, engine="pyarrow", index=False)
    manifest.metadata.update({"name": version.name, "version": version.version,
                              "dataset_hash": version.dataset_hash, "ref": f"{version.name}@v{version.version}"})


# kfp reads the component's outputs from the call-form NamedTuple return annotation, which mypy rejects
@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def fine_tune_model(manifest: Input[Dataset], base_model: str, steps: int, batch_size: int,
                    learning_rate: float, segment_s: float, seed: int, musicops_home: str,
                    mlflow_tracking_uri: str, model: Output[Model],
                    metrics: Output[Metrics]) -> NamedTuple("Outputs", run_id=str, model_uri=str):  # type: ignore[valid-type]
    """Train on the validated manifest; log params, loss curve and the model to MLflow (and W&B)."""
    import json
    import os
    import tempfile
    from collections import namedtuple

    import pandas as pd

    from musicops.components.runtime import component_settings
    from musicops.training.finetune import FineTuneConfig
    from musicops.training.run import fine_tune

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    config = FineTuneConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate or None,
                            segment_s=segment_s, seed=seed)
    identity = {"hash": manifest.metadata["dataset_hash"], "ref": manifest.metadata["ref"]}
    frame = pd.read_parquet(os.path.join(manifest.path, "manifest.parquet"), engine="pyarrow")
    frame["path"] = [os.path.join(manifest.path, str(path)) for path in frame["path"]]  # where kfp put the audio
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "manifest.parquet")
        frame.to_parquet(local, engine="pyarrow", index=False)
        outcome = fine_tune(local, base_model, config, settings, dataset=identity)
    with open(model.path, "w") as handle:
        json.dump({"run_id": outcome.run_id, "model_uri": outcome.model_uri, "tags": outcome.tags}, handle)
    model.metadata.update({"run_id": outcome.run_id, "model_uri": outcome.model_uri})
    metrics.log_metric("first_loss", outcome.losses[0])
    metrics.log_metric("final_loss", outcome.losses[-1])
    metrics.log_metric("train_seconds", round(outcome.seconds, 3))
    Outputs = namedtuple("Outputs", ["run_id", "model_uri"])  # noqa: N806 - a class
    return Outputs(outcome.run_id, outcome.model_uri)


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def register_model_version(model: Input[Model], registered_name: str, musicops_home: str,
                           mlflow_tracking_uri: str) -> str:
    """Register the logged model as a new version carrying its provenance tags."""
    import json

    from musicops.components.runtime import component_settings
    from musicops.training.run import register_model

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    with open(model.path) as handle:
        logged = json.load(handle)
    return register_model(logged["model_uri"], registered_name, logged["tags"], settings)
