"""One settings object for the whole platform: every environment variable is read here, once.

`Settings` is a pydantic-settings model: each field names its variable (`MUSICOPS_*`, plus the
standard `MLFLOW_TRACKING_URI`, `MLFLOW_REGISTRY_URI`, `WANDB_MODE`, `WANDB_PROJECT`, and the AWS
variables of an S3 asset store), values are
validated when read, and secrets are `SecretStr` so they never show up in a repr or a log line.
Entry points (the CLI, `musicops serve`, `mos serve`, kfp components) build it once with
`get_settings()` and pass it down; library functions take `settings` and fall back to
`get_settings()` only when called directly.

Embedded defaults first: the state directory holds a sqlite MLflow store, the kfp pipeline root, the
asset store and the provenance database; `MLFLOW_TRACKING_URI`, `MUSICOPS_DATABASE_URL` and
`MUSICOPS_ASSET_STORE` swap in the real services unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from musicops.errors import MusicopsError

DEFAULT_MODEL_NAME = "musicops-musicgen"
DEFAULT_EXPERIMENT = "musicops"
DEFAULT_MOS_URL = "http://127.0.0.1:8765"
DEFAULT_JOB_LEASE_S = 30.0


class SettingsError(MusicopsError):
    """An environment variable holds a value musicops cannot use (exit 2, naming the variable)."""

    exit_code = 2


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every knob the platform reads from the environment, validated, immutable once built."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True,
                                      env_ignore_empty=True, case_sensitive=True)

    home: Path = Field(Path(".musicops"), validation_alias=_env("MUSICOPS_HOME", "home"))
    mlflow_tracking_uri: str = Field("", validation_alias=_env("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"))
    mlflow_registry_uri: str | None = Field(None, validation_alias=_env("MLFLOW_REGISTRY_URI",
                                                                          "mlflow_registry_uri"))
    experiment: str = Field(DEFAULT_EXPERIMENT, validation_alias=_env("MUSICOPS_EXPERIMENT", "experiment"))
    registered_model_name: str = Field(DEFAULT_MODEL_NAME, validation_alias=_env("MUSICOPS_MODEL_NAME",
                                                                                 "registered_model_name"))
    # Online W&B without a network hangs for minutes: offline unless the user says otherwise.
    wandb_mode: Literal["online", "offline", "disabled", "shared"] = Field("offline", validation_alias=_env("WANDB_MODE", "wandb_mode"))
    wandb_project: str = Field("musicops", validation_alias=_env("WANDB_PROJECT", "wandb_project"))
    database_url: str = Field("", validation_alias=_env("MUSICOPS_DATABASE_URL", "database_url"))
    asset_store_url: str | None = Field(None, validation_alias=_env("MUSICOPS_ASSET_STORE", "asset_store_url"))
    # S3-compatible object storage (MUSICOPS_ASSET_STORE=s3://bucket/prefix; docs/storage.md). The
    # endpoint falls back to the standard variables so one value serves boto3, MLflow and musicops;
    # credentials unset here leave boto3's own chain (profiles, instance roles) to find them.
    s3_endpoint_url: str | None = Field(None, validation_alias=_env(
        "MUSICOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL",
        "s3_endpoint_url"))
    s3_region: str | None = Field(None, validation_alias=_env("MUSICOPS_S3_REGION", "AWS_REGION",
                                                              "AWS_DEFAULT_REGION", "s3_region"))
    s3_access_key_id: SecretStr | None = Field(None, validation_alias=_env("AWS_ACCESS_KEY_ID",
                                                                           "s3_access_key_id"))
    s3_secret_access_key: SecretStr | None = Field(None, validation_alias=_env("AWS_SECRET_ACCESS_KEY",
                                                                               "s3_secret_access_key"))
    s3_session_token: SecretStr | None = Field(None, validation_alias=_env("AWS_SESSION_TOKEN",
                                                                           "s3_session_token"))
    # SHA-256 checksum on each PUT (verified by AWS S3, MinIO); off for servers that reject the
    # flexible-checksum headers (GCS's interop API, older S3-compatibles). Reads are hash-checked anyway.
    s3_checksum: bool = Field(True, validation_alias=_env("MUSICOPS_S3_CHECKSUM", "s3_checksum"))
    # "path" (bucket in the URL path) suits MinIO, Ceph and test servers; "virtual" is AWS's default.
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", validation_alias=_env("MUSICOPS_S3_ADDRESSING_STYLE", "s3_addressing_style"))
    # Cost metric for batch generation: what one accelerator-hour costs, in your currency.
    price_per_accelerator_hour: float = Field(2.0, ge=0, validation_alias=_env("MUSICOPS_PRICE_PER_HOUR",
                                                                               "price_per_accelerator_hour"))
    # Release gates that must run (`musicops gate --require` and the release pipeline's `require`
    # override it): comma-separated regression, copyright, mos, licence or "all"; unset: regression.
    release_require: str | None = Field(None, validation_alias=_env("MUSICOPS_RELEASE_REQUIRE", "release_require"))
    # Off a terminal (CI logs, kfp steps), progress counters print a line at most this often.
    progress_interval_s: float = Field(4.0, ge=0, validation_alias=_env("MUSICOPS_PROGRESS_INTERVAL_S",
                                                                        "progress_interval_s"))
    user: str | None = Field(None, validation_alias=_env("MUSICOPS_USER", "user"))
    torch_threads: int | None = Field(None, ge=1, validation_alias=_env("MUSICOPS_TORCH_THREADS", "torch_threads"))
    soundfont: Path | None = Field(None, validation_alias=_env("MUSICOPS_SOUNDFONT", "soundfont"))
    faiss_gpu: int = Field(0, ge=0, validation_alias=_env("MUSICOPS_FAISS_GPU", "faiss_gpu"))
    kfp_image: str | None = Field(None, validation_alias=_env("MUSICOPS_KFP_IMAGE", "kfp_image"))
    # Aliases whose holders must carry a commercial-use licence (release gate), comma-separated.
    commercial_aliases: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("MUSICOPS_COMMERCIAL_ALIASES", "commercial_aliases"))
    # Serving.
    serving_database_url: str | None = Field(None, validation_alias=_env("MUSICOPS_SERVING_DATABASE_URL",
                                                                         "serving_database_url"))
    serve_secret: SecretStr | None = Field(None, validation_alias=_env("MUSICOPS_SERVE_SECRET", "serve_secret"))
    webhook_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("MUSICOPS_SERVE_WEBHOOK_HOSTS", "webhook_hosts"))
    replica_id: str | None = Field(None, validation_alias=_env("MUSICOPS_REPLICA_ID", "replica_id"))
    job_lease_s: float = Field(DEFAULT_JOB_LEASE_S, ge=0.5, le=3600, validation_alias=_env("MUSICOPS_JOB_LEASE_S",
                                                                                "job_lease_s"))
    # MOS collection.
    mos_database_url: str | None = Field(None, validation_alias=_env("MUSICOPS_MOS_DATABASE_URL",
                                                                     "mos_database_url"))
    mos_url: str = Field(DEFAULT_MOS_URL, validation_alias=_env("MUSICOPS_MOS_URL", "mos_url"))
    mos_secret: SecretStr | None = Field(None, validation_alias=_env("MUSICOPS_MOS_SECRET", "mos_secret"))
    mos_admin_token: SecretStr | None = Field(None, validation_alias=_env("MUSICOPS_MOS_ADMIN_TOKEN",
                                                                          "mos_admin_token"))

    @field_validator("commercial_aliases", "webhook_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        """Resolve the state directory and point the embedded stores inside it."""
        home = Path(self.home).expanduser().resolve()
        object.__setattr__(self, "home", home)
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{home / 'mlflow.db'}")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{home / 'provenance.db'}")
        return self

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def mlflow_artifacts_uri(self) -> str | None:
        """Where new MLflow experiments keep their artifacts when the asset store is S3: the same
        bucket and prefix, under `mlflow/` (None: MLflow's default for the tracking store)."""
        url = (self.asset_store_url or "").rstrip("/")
        if url.lower().startswith("s3://"):
            return f"{url}/mlflow"
        return None

    @property
    def kfp_root(self) -> Path:
        return self.home / "kfp"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def runs_dir(self) -> Path:
        """Scratch space for training runs: checkpoints live here so a crashed run can resume."""
        return self.home / "runs"

    @property
    def model_cache(self) -> Path:
        """Downloaded registry versions (immutable, so caching by name/version is safe)."""
        return self.home / "model-cache"

    @property
    def assets_dir(self) -> Path:
        """The content-addressed asset store (unless MUSICOPS_ASSET_STORE points elsewhere)."""
        return self.home / "assets"

    @property
    def wandb_dir(self) -> Path:
        return self.home / "wandb"

    @property
    def provenance_db(self) -> Path:
        """The embedded SQLite provenance database behind the default `database_url`."""
        return self.home / "provenance.db"

    @property
    def mos_database(self) -> str:
        """The MOS database URL: `MUSICOPS_MOS_DATABASE_URL`, else SQLite in the state directory."""
        return self.mos_database_url or f"sqlite:///{self.home / 'mos.db'}"

    def serving_database(self, file_name: str) -> str:
        """A serving database URL (keys, jobs): one shared server when configured, else SQLite files."""
        return self.serving_database_url or f"sqlite:///{self.home / 'serve' / file_name}"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, re-validated (so derived defaults follow a new `home`)."""
        data = self.model_dump()
        data.update(changes)
        if "home" in changes:
            for derived in ("mlflow_tracking_uri", "database_url"):
                if derived not in changes and data[derived] == getattr(self, derived) \
                        and data[derived].startswith("sqlite:///") and str(self.home) in data[derived]:
                    data[derived] = ""
        return Settings.from_values(**data)

    @classmethod
    def from_values(cls, **values: Any) -> Settings:
        """Settings from explicit values only, ignoring the environment (kfp components, tests)."""
        try:
            return _ExplicitSettings(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    def ensure(self) -> Settings:
        """Create the state directory layout; cheap and idempotent."""
        for path in (self.home, self.mlflow_artifacts, self.kfp_root, self.datasets_dir, self.runs_dir):
            path.mkdir(parents=True, exist_ok=True)
        if not self.asset_store_url:  # a store elsewhere (another folder, S3) leaves this one untouched
            self.assets_dir.mkdir(parents=True, exist_ok=True)
        return self


class _ExplicitSettings(Settings):
    """`Settings` that reads no environment: only the values given."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *args: Any, **kwargs: Any) -> Any:
        return (init_settings,)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else "settings"
        field = Settings.model_fields.get(name)
        alias = field.validation_alias if field is not None else None
        env_name = alias.choices[0] if isinstance(alias, AliasChoices) else name
        problems.append(f"{env_name}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)


def get_settings(home: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from the environment; `home` (a CLI `--home`) wins over `MUSICOPS_HOME`.

    A bad value (say `MUSICOPS_PRICE_PER_HOUR=abc`) raises `SettingsError` naming the variable.
    """
    try:
        settings = Settings() if home is None else Settings(home=Path(home))
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    return settings


def current_user(settings: Settings | None = None) -> str:
    """Who is acting, for audit fields (batch runs, alias moves): `MUSICOPS_USER` when set (CI bots,
    shared service accounts name the person), else the login name, else "unknown" (a container
    without a passwd entry must still run)."""
    import getpass

    configured = (settings or get_settings()).user
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
