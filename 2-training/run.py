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
import uuid
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
              base_licence: str | None = None, dataset: dict[str, str] | None = None,
              keep_run_dir: bool = False,
              on_plan: Callable[[dict[str, Any]], None] | None = None) -> FineTuneOutcome:
    """Fine-tune `base_model` on a validated manifest and log the result as an MLflow model.

    Before training, `on_plan` (default: log lines) gets the learning rate in force, the memory
    estimate and any warnings (see `plan_training`). The weights are stored once: when MLflow's artifacts live on this disk the run folder's copy is
    removed after logging (`keep_run_dir` keeps it) and `model_dir` points at the logged one."""
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
    config, plan = plan_training(model, config, data)
    (on_plan or _log_plan)(plan)
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
    logged = local_logged_dir(model_uri)
    if logged is not None and not keep_run_dir:
        # MLflow holds the weights on this disk now: the run folder's copy would be a second one
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir = logged
    return FineTuneOutcome(run_id=run_id, model_uri=model_uri, model_dir=model_dir, losses=result.losses,
                           tags=tags, resumed_from=result.resumed_from, seconds=seconds, loss_plot=plot)


def plan_training(model: Any, config: FineTuneConfig, data: Any) -> tuple[FineTuneConfig, dict[str, Any]]:
    """The config with its learning rate decided by the decoder's size (when unset), and what to tell
    the user before training: the rate, a memory estimate, warnings (degenerate codes)."""
    from musicops.training.planning import (
        decoder_parameters,
        degenerate_codes,
        estimate_memory,
        with_learning_rate,
    )

    hf = model.model
    n_decoder = decoder_parameters(hf)
    chosen = config.learning_rate is None
    config = with_learning_rate(config, hf)
    frames = int(data.codes.shape[-1]) + int(data.codes.shape[1])  # + the delay pattern's extra steps
    memory = estimate_memory(hf, min(config.batch_size, len(data)), frames, config.lora, config.optimizer,
                             config.gradient_checkpointing)
    warnings = [w for w in (degenerate_codes(data.codes),) if w]
    return config, {"learning_rate": config.learning_rate, "learning_rate_chosen": chosen,
                    "decoder_parameters": n_decoder, "memory": memory, "warnings": warnings}


def _log_plan(plan: dict[str, Any]) -> None:
    import logging

    log = logging.getLogger("musicops.training")
    source = "by decoder size" if plan["learning_rate_chosen"] else "as given"
    log.warning("fine-tune: %s decoder parameters, learning rate %g (%s); %s", f"{plan['decoder_parameters']:,}",
                plan["learning_rate"], source, plan["memory"].describe())
    for warning in plan["warnings"]:
        log.warning("fine-tune warning: %s", warning)


def local_logged_dir(model_uri: str) -> Path | None:
    """The MusicGen directory inside a logged model when MLflow keeps it on this disk (None otherwise)."""
    from urllib.parse import urlparse

    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    from musicops.registry import musicgen_dir

    if urlparse(ModelsArtifactRepository.get_underlying_uri(model_uri)).scheme not in ("", "file"):
        return None
    return musicgen_dir(Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri)), model_uri)


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
                     licence: str | None = None, extra_tags: dict[str, str] | None = None,
                     description: str | None = None) -> str:
    """Register existing weights (a local MusicGen directory, e.g. a copy of musicgen-small) as a new
    version of `name`, after checking that they load. Returns the version."""
    from musicops.models.loading import resolve_model
    from musicops.models.musicgen import TransformersMusicGen
    from musicops.names import safe_name
    from musicops.registry import configure_mlflow, ensure_experiment

    safe_name(name, "registered model")  # refuse a bad name before anything is logged
    settings = configure_mlflow(settings)
    resolved = resolve_model(str(model_dir), settings)
    TransformersMusicGen.from_dir(resolved.reference)  # refuse to register what cannot be loaded
    tags = {f"{TAG_PREFIX}base_model": resolved.reference, f"{TAG_PREFIX}licence": licence or licence_of(resolved),
            f"{TAG_PREFIX}code_version": code_version(), f"{TAG_PREFIX}origin": "imported directory",
            **(extra_tags or {})}
    import mlflow

    with mlflow.start_run(experiment_id=ensure_experiment(settings), run_name=f"import-{Path(model_dir).name}",
                          tags=tags):
        model_uri = log_musicgen_model(Path(resolved.reference), tags)
    return register_model(model_uri, name, tags, settings,
                          description=description or f"Imported from {resolved.reference}")


def import_audiocraft_checkpoint(checkpoint_dir: str | Path, name: str, settings: Settings | None = None,
                                 licence: str | None = None, text_encoder: str | Path | None = None,
                                 codec: str | Path | None = None) -> tuple[str, Any]:
    """Convert an audiocraft MusicGen export to the default backend's format and register it, with its
    origin (audiocraft version, checkpoint hashes, text encoder, licence) as version tags.
    Returns (version, Conversion). A checkpoint that does not convert registers nothing."""
    from musicops.models.audiocraft_import import CODEC_FILE, LM_FILE, convert_checkpoint
    from musicops.names import safe_name

    safe_name(name, "registered model")
    settings = (settings or get_settings()).ensure()
    checkpoint_dir = Path(checkpoint_dir)
    staging = settings.home / "imports" / f".staging-{uuid.uuid4().hex}"
    try:
        conversion = convert_checkpoint(checkpoint_dir, staging, text_encoder=text_encoder, codec=codec)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    origin = conversion.origin
    converted = settings.home / "imports" / f"audiocraft-{origin['sha256'][LM_FILE][:12]}-{origin['sha256'][CODEC_FILE][:12]}"
    if converted.exists():
        shutil.rmtree(converted)
    staging.rename(converted)
    conversion.directory = converted
    prefix = f"{TAG_PREFIX}audiocraft."
    tags = {
        f"{TAG_PREFIX}origin": "audiocraft",
        f"{TAG_PREFIX}base_model": origin["checkpoint"],
        f"{prefix}version": origin["audiocraft_version"],
        f"{prefix}state_dict_sha256": origin["sha256"][LM_FILE],
        f"{prefix}compression_state_dict_sha256": origin["sha256"][CODEC_FILE],
        f"{prefix}text_encoder": f"{origin['text_encoder']['name']} ("
                                 + ("fine-tuned weights from state_dict.bin, config and tokenizer from "
                                    if origin["text_encoder"]["fine_tuned_in_checkpoint"] else "")
                                 + f"{origin['text_encoder']['source']})",
        f"{prefix}codec": origin["codec"],
    }
    version = import_model_dir(converted, name, settings, licence or licence_from_card(checkpoint_dir), tags,
                               description=f"Converted from the audiocraft {origin['audiocraft_version']} checkpoint "
                                           f"{origin['checkpoint']}")
    return version, conversion


def register_model(model_uri: str, name: str, tags: dict[str, str], settings: Settings | None = None,
                   description: str | None = None) -> str:
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
                                description=description or f"Fine-tuned from {tags.get(TAG_PREFIX + 'base_model')} "
                                                           f"on {tags.get(TAG_PREFIX + 'dataset')}")
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
    return licence_from_card(Path(resolved.reference))


def licence_from_card(directory: Path) -> str:
    """The `license:` line of a model card's front matter (README.md), or "unknown"."""
    card = directory / "README.md"
    if card.is_file():
        match = re.search(r"^license:\s*(\S+)", card.read_text(errors="replace"), re.MULTILINE)
        if match:
            return match.group(1)
    return "unknown"
