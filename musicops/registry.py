"""MLflow helpers: tracking setup in the state directory, model URIs, aliases, registration.

Follows MLflow's own conventions: `models:/NAME/VERSION` and `models:/NAME@ALIAS` URIs, model
version tags for provenance, aliases (`champion`) for promotion.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from musicops.config import Settings, get_settings
from musicops.errors import MusicopsError

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))$")
MUSICGEN_ARTIFACT = "musicgen"


class ModelNotFoundError(MusicopsError, LookupError):
    """A model name, version or alias that the registry does not have."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed `models:/` URI: exactly one of version or alias is set."""

    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.version else f"models:/{self.name}@{self.alias}"


def parse_model_uri(uri: str) -> ModelRef:
    match = _MODEL_URI.match(uri.strip())
    if not match:
        raise ValueError(f"not a model URI: {uri!r} (expected models:/NAME/VERSION or models:/NAME@ALIAS)")
    return ModelRef(match["name"], match["version"], match["alias"])


def configure_mlflow(settings: Settings | None = None) -> Settings:
    """Point MLflow at the configured store (the state directory's sqlite file by default)."""
    import os

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = (settings or get_settings()).ensure()
    _export_s3_for_mlflow(settings)
    # mlflow.set_*_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ, where
    # get_settings() would later read them as the user's choice: a process that configures several
    # state directories in turn (tests, the demo) then sends runs to the wrong store. Keep the
    # environment as the user left it; MLflow's own module state holds the URIs.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        # Always set both: a registry URI left from an earlier configuration would point elsewhere.
        mlflow.set_registry_uri(settings.mlflow_registry_uri or settings.mlflow_tracking_uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return settings


# What `_export_s3_for_mlflow` put into os.environ (name -> value), so the next configuration of
# another state directory takes back exactly that and nothing the user set.
_EXPORTED: dict[str, str] = {}


def _export_s3_for_mlflow(settings: Settings) -> None:
    """Give MLflow's own S3 client the asset store's endpoint, region and credentials.

    MLflow builds its S3 artifact client from environment variables only (MLFLOW_S3_ENDPOINT_URL and
    boto3's AWS_* chain); there is no API to pass them. This is the one place musicops writes them: only
    for an S3 asset store, only values the settings hold, never over a variable the user set."""
    import os

    for name, exported in _EXPORTED.items():
        if os.environ.get(name) == exported:
            del os.environ[name]
    _EXPORTED.clear()
    if settings.mlflow_artifacts_uri is None:
        return
    secrets = {"AWS_ACCESS_KEY_ID": settings.s3_access_key_id, "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
               "AWS_SESSION_TOKEN": settings.s3_session_token}
    wanted = {"MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url, "AWS_DEFAULT_REGION": settings.s3_region,
              **{k: v.get_secret_value() if v is not None else None for k, v in secrets.items()}}
    if settings.s3_addressing_style != "auto" or settings.s3_endpoint_url:
        wanted["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] = (
            settings.s3_addressing_style if settings.s3_addressing_style != "auto" else "path")
    for name, value in wanted.items():
        if value and name not in os.environ:
            os.environ[name] = value
            _EXPORTED[name] = value


def ensure_experiment(settings: Settings, name: str | None = None) -> str:
    """Get or create the experiment. With the embedded sqlite tracking store musicops picks the
    artifact location: the state directory, or the asset store's bucket (s3://bucket/prefix/mlflow)
    when the asset store is S3. A tracking server keeps its own (--artifacts-destination)."""
    import mlflow

    name = name or settings.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if settings.mlflow_tracking_uri.startswith("sqlite:"):
        location = settings.mlflow_artifacts_uri or settings.mlflow_artifacts.as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it in the meantime
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def resolve_version(ref: ModelRef, client: Any | None = None) -> Any:
    """Turn a name + version or alias into an MLflow `ModelVersion`, or fail with a clear message."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    try:
        client.get_registered_model(ref.name)
    except MlflowException as exc:
        raise ModelNotFoundError(f"no registered model named {ref.name!r}") from exc
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        assert ref.version is not None  # a ModelRef has exactly one of version or alias
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise ModelNotFoundError(f"registered model {ref.name!r} has no {what}") from exc


def download_version(name: str, version: str, settings: Settings) -> Path:
    """A version's MusicGen directory: read in place when MLflow keeps its artifacts on this disk (one
    stored copy per version), else fetched once into the state cache (versions are immutable)."""
    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    uri = f"models:/{name}/{version}"
    underlying = ModelsArtifactRepository.get_underlying_uri(uri)
    if urlparse(underlying).scheme in ("", "file"):
        # MLflow's local repository answers with the artifact folder itself when given no destination
        return musicgen_dir(Path(mlflow.artifacts.download_artifacts(artifact_uri=uri)), uri)
    target = settings.model_cache / _safe(name) / str(version)
    if (target / "MLmodel").is_file():
        return musicgen_dir(target, f"models:/{name}/{version}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}-"))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(staging))
        musicgen_dir(staging, f"models:/{name}/{version}")
        with contextlib.suppress(OSError):  # a concurrent download won: use it
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return musicgen_dir(target, f"models:/{name}/{version}")


def musicgen_dir(model_root: Path, uri: str) -> Path:
    """The MusicGen weights directory inside a downloaded pyfunc model, as its MLmodel file says."""
    from mlflow.models import Model

    try:
        flavor = Model.load(str(model_root / "MLmodel")).flavors["python_function"]
        relative = flavor["artifacts"][MUSICGEN_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"{uri} is not a musicops MusicGen model (no '{MUSICGEN_ARTIFACT}' artifact)") from exc
    return model_root / relative


def _safe(name: str) -> str:
    """Registered-model names may contain characters that must not become path segments."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


HUB_TAG_PREFIX = "musicops.hub."


def hub_version_tags(base_model: str | None) -> dict[str, str]:
    """Version tags naming the hub commit a registered version came from, when its base model (the
    pinned `hub:OWNER/NAME@<sha>` URI that fine-tuning records as `musicops.base_model`) is one.

    `musicops.base_model` already carries the sha inside the URI; these tags make it searchable
    (`tags.\\`musicops.hub.commit\\` = '<sha>'`) without parsing. Empty for any other base."""
    from musicops.models.hub import COMMIT_SHA, HUB_PREFIX, parse_hub_id

    if not base_model or not base_model.startswith(HUB_PREFIX):
        return {}
    ref = parse_hub_id(base_model)
    if ref is None or ref.revision is None or not COMMIT_SHA.fullmatch(ref.revision):
        return {}
    return {f"{HUB_TAG_PREFIX}repo_id": ref.repo_id, f"{HUB_TAG_PREFIX}commit": ref.revision}
