"""The fine-tune pipeline: ingest -> validate -> fine-tune -> register (kfp wiring only)."""

# No `from __future__ import annotations` here: kfp reads the pipeline's real annotation objects.
from typing import Any

from kfp import dsl

from musicops.components.fine_tune import (
    fine_tune_model,
    ingest_dataset,
    register_model_version,
    validate_dataset,
)
from musicops.pipelines.profile import LOCAL, Profile


def build(profile: Profile = LOCAL) -> Any:
    """The pipeline with `profile`'s cluster settings. No step is cacheable: ingest reads a folder whose
    files may change under the same path, validate publishes a dataset version, training and register
    write to MLflow."""

    @dsl.pipeline(name="musicops-fine-tune",
                  description="Ingest and validate an audio dataset, fine-tune MusicGen, register it in MLflow.")
    def fine_tune_pipeline(
        source_dir: str,
        dataset_name: str = "dataset",
        base_model: str = "musicgen-tiny",
        registered_name: str = "musicops-musicgen",
        steps: int = 20,
        batch_size: int = 4,
        learning_rate: float = 0.0,  # 0: by the decoder's size (musicops.training.planning)
        segment_s: float = 2.0,
        seed: int = 0,
        musicops_home: str = "",
        mlflow_tracking_uri: str = "",
    ) -> str:
        ingest = profile.step(ingest_dataset(source_dir=source_dir, musicops_home=musicops_home),
                              cache=False, name="ingest")
        validate = profile.step(validate_dataset(candidate=ingest.outputs["candidate"], name=dataset_name,
                                                 source_dir=source_dir, musicops_home=musicops_home),
                                cache=False, name="validate (Great Expectations)")
        train = profile.step(fine_tune_model(manifest=validate.outputs["manifest"], base_model=base_model,
                                             steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                                             segment_s=segment_s, seed=seed, musicops_home=musicops_home,
                                             mlflow_tracking_uri=mlflow_tracking_uri),
                             cache=False, model=True, name="fine-tune")
        register = profile.step(register_model_version(model=train.outputs["model"], registered_name=registered_name,
                                                       musicops_home=musicops_home,
                                                       mlflow_tracking_uri=mlflow_tracking_uri),
                                cache=False, name="register")
        return register.output

    return fine_tune_pipeline


fine_tune_pipeline = build()
