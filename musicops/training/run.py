"""Fine-tune end to end: manifest -> base model -> train -> MLflow/W&B run -> logged model -> version.

Plain library functions taking paths and returning results; the CLI and the kfp components call
them. A crashed run resumes from its last checkpoint when started again with the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from musicops import __version__, code_version
from musicops.config import Settings, get_settings
from musicops.training.finetune import FineTuneConfig

TAG_PREFIX = "musicops."
# Installing the logged model elsewhere needs these; explicit requirements also keep log_model fast.
PIP_REQUIREMENTS = [f"musicops=={__version__}", "torch==2.13.0", "transformers==5.24.0", "mlflow==3.17.2"]


@dataclass
class FineTuneOutcome:
    run_id: str
    model_uri: str  # the logged model, ready to register
    model_dir: Path
    losses: list[float]
    tags: dict[str, str]
    resumed_from: int | None = None
    seconds: float = 0.0
    loss_plot: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def fine_tune(manifest: str | Path, base_model: str = "musicgen-tiny", config: FineTuneConfig | None = None,
              settings: Settings | None = None, run_name: str | None = None,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              base_licence: str | None = None, dataset: dict[str, str] | None = None) -> FineTuneOutcome:
    """Fine-tune `base_model` on a validated manifest and log the result as an MLflow model."""
    import torch

    from musicops.datasets.manifest import load_manifest
    from musicops.models.loading import load_model, resolve_model
    from musicops.registry import MUSICGEN_ARTIFACT
    from musicops.training.data import encode_manifest
    from musicops.training.finetune import data_fingerprint, train
    from musicops.training.tracking import RunTracker, plot_loss_curve

    config = config or FineTuneConfig()
    settings = (settings or get_settings()).ensure()
    frame = load_manifest(manifest, settings)
    dataset = dataset or manifest_identity(manifest, frame, settings)
    resolved = resolve_model(base_model, settings)
    torch.manual_seed(config.seed)
    model = load_model(resolved, settings, device="cuda" if torch.cuda.is_available() else None)
    data = encode_manifest(model, frame, config.segment_s)
    key = hashlib.sha256(json.dumps([dataset["hash"], resolved.pinned_uri,
                                     config.fingerprint(data_fingerprint(data))]).encode()).hexdigest()[:16]
    checkpoint_dir = settings.runs_dir / f"fine-tune-{key}" / "checkpoints"
    tags = {
        f"{TAG_PREFIX}dataset_hash": dataset["hash"],
        f"{TAG_PREFIX}dataset": dataset["ref"],
        f"{TAG_PREFIX}base_model": resolved.pinned_uri,
        f"{TAG_PREFIX}seed": str(config.seed),
        f"{TAG_PREFIX}code_version": code_version(),
        f"{TAG_PREFIX}licence": base_licence or licence_of(resolved),
        f"{TAG_PREFIX}backend": model.backend,
    }
    params = {**asdict(config), "base_model": resolved.pinned_uri, "dataset": dataset["ref"],
              "n_examples": len(data), "device": str(model.device)}
    started = time.perf_counter()
    with RunTracker(settings, run_name or f"fine-tune-{key[:8]}", params, tags) as tracker:
        def log_step(step: int, metrics: dict[str, float]) -> None:
            tracker.log_metrics(metrics, step=step)
            if on_step is not None:
                on_step(step, metrics)

        result = train(model, data, config, checkpoint_dir=checkpoint_dir, on_step=log_step)
        seconds = time.perf_counter() - started
        tracker.log_metrics({"final_loss": result.losses[-1], "train_seconds": seconds})
        run_dir = checkpoint_dir.parent
        plot = plot_loss_curve(result.losses, run_dir / "loss_curve.png", f"fine-tune {dataset['ref']}")
        tracker.log_artifact(plot)
        model_dir = model.save(run_dir / MUSICGEN_ARTIFACT)
        model_uri = log_musicgen_model(model_dir, tags)
        run_id = tracker.run_id or ""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: a rerun starts a fresh run
    return FineTuneOutcome(run_id=run_id, model_uri=model_uri, model_dir=model_dir, losses=result.losses,
                           tags=tags, resumed_from=result.resumed_from, seconds=seconds, loss_plot=plot)


def log_musicgen_model(model_dir: Path, tags: dict[str, str]) -> str:
    """Log a MusicGen directory as an MLflow pyfunc model in the active run; returns its model URI."""
    import mlflow

    from musicops.models import pyfunc
    from musicops.registry import MUSICGEN_ARTIFACT

    info = mlflow.pyfunc.log_model(
        name="model", python_model=pyfunc.__file__, artifacts={MUSICGEN_ARTIFACT: str(model_dir)},
        pip_requirements=PIP_REQUIREMENTS, tags=tags,
    )
    return info.model_uri


def import_model_dir(model_dir: str | Path, name: str, settings: Settings | None = None,
                     licence: str | None = None) -> str:
    """Register existing weights (a local MusicGen directory, e.g. a copy of musicgen-small) as a new
    version of `name`, after checking that they load. Returns the version."""
    from musicops.models.loading import resolve_model
    from musicops.models.musicgen import TransformersMusicGen
    from musicops.registry import configure_mlflow, ensure_experiment

    settings = configure_mlflow(settings)
    resolved = resolve_model(str(model_dir), settings)
    TransformersMusicGen.from_dir(resolved.reference)  # refuse to register what cannot be loaded
    tags = {f"{TAG_PREFIX}base_model": resolved.reference, f"{TAG_PREFIX}licence": licence or licence_of(resolved),
            f"{TAG_PREFIX}code_version": code_version(), f"{TAG_PREFIX}origin": "imported directory"}
    import mlflow

    with mlflow.start_run(experiment_id=ensure_experiment(settings), run_name=f"import-{Path(model_dir).name}",
                          tags=tags):
        model_uri = log_musicgen_model(Path(resolved.reference), tags)
    return register_model(model_uri, name, tags, settings)


def register_model(model_uri: str, name: str, tags: dict[str, str], settings: Settings | None = None) -> str:
    """Register a logged model as a new version of `name` and copy its provenance tags onto it."""
    import mlflow
    from mlflow import MlflowClient

    from musicops.names import safe_name
    from musicops.registry import configure_mlflow

    safe_name(name, "registered model")
    configure_mlflow(settings)
    version = mlflow.register_model(model_uri, name, tags=tags)
    client = MlflowClient()
    client.update_model_version(name, version.version,
                                description=f"Fine-tuned from {tags.get(TAG_PREFIX + 'base_model')} on "
                                            f"{tags.get(TAG_PREFIX + 'dataset')}")
    return str(version.version)


def manifest_identity(manifest: str | Path, frame: Any, settings: Settings | None = None) -> dict[str, str]:
    """Name, version and content hash of a manifest (from its manifest.json when published by ingest)."""
    from musicops.datasets.manifest import dataset_hash, manifest_info, resolve_manifest

    try:
        meta = manifest_info(resolve_manifest(manifest, settings))
        return {"hash": str(meta["dataset_hash"]), "ref": f"{meta['name']}@v{meta['version']}"}
    except (FileNotFoundError, KeyError, ValueError):
        return {"hash": dataset_hash(frame), "ref": str(manifest)}


def licence_of(resolved: Any) -> str:
    """The base weights' licence: inherited from a registry tag or read from a model card."""
    if resolved.kind == "preset":
        return "none (random init, no pretrained weights)"
    if resolved.kind == "registry":
        return resolved.tags.get(f"{TAG_PREFIX}licence", "unknown")
    card = Path(resolved.reference) / "README.md"
    if card.is_file():
        match = re.search(r"^license:\s*(\S+)", card.read_text(errors="replace"), re.MULTILINE)
        if match:
            return match.group(1)
    return "unknown"
