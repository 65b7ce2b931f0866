"""One settings object for the whole platform, every field overridable by an environment variable.

Embedded defaults first: the state directory holds a sqlite MLflow store, the kfp pipeline root, the
asset store and the provenance database; `MLFLOW_TRACKING_URI`, `MUSICOPS_DATABASE_URL` and
`MUSICOPS_ASSET_STORE` swap in the real services unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "musicops-musicgen"
DEFAULT_EXPERIMENT = "musicops"


@dataclass(frozen=True)
class Settings:
    home: Path
    mlflow_tracking_uri: str
    mlflow_registry_uri: str | None
    experiment: str
    registered_model_name: str
    wandb_mode: str
    wandb_project: str
    database_url: str = ""
    asset_store_url: str | None = None
    price_per_accelerator_hour: float = 0.0

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

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

    def ensure(self) -> Settings:
        """Create the state directory layout; cheap and idempotent."""
        for path in (self.home, self.mlflow_artifacts, self.kfp_root, self.datasets_dir, self.runs_dir,
                     self.assets_dir):
            path.mkdir(parents=True, exist_ok=True)
        return self


def get_settings(home: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from the environment (`MUSICOPS_HOME`, `MLFLOW_TRACKING_URI`,
    `MUSICOPS_DATABASE_URL`, `MUSICOPS_ASSET_STORE`, ...)."""
    root = Path(home or os.environ.get("MUSICOPS_HOME") or ".musicops").expanduser().resolve()
    default_uri = f"sqlite:///{root / 'mlflow.db'}"
    return Settings(
        home=root,
        mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or default_uri,
        mlflow_registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or None,
        experiment=os.environ.get("MUSICOPS_EXPERIMENT", DEFAULT_EXPERIMENT),
        registered_model_name=os.environ.get("MUSICOPS_MODEL_NAME", DEFAULT_MODEL_NAME),
        # Online W&B without a network hangs for minutes: offline unless the user says otherwise.
        wandb_mode=os.environ.get("WANDB_MODE", "offline"),
        wandb_project=os.environ.get("WANDB_PROJECT", "musicops"),
        database_url=os.environ.get("MUSICOPS_DATABASE_URL") or f"sqlite:///{root / 'provenance.db'}",
        asset_store_url=os.environ.get("MUSICOPS_ASSET_STORE") or None,
        # Cost metric for batch generation: what one accelerator-hour costs, in your currency.
        price_per_accelerator_hour=float(os.environ.get("MUSICOPS_PRICE_PER_HOUR", "2.0") or 0),
    )


def current_user() -> str:
    """Who is acting, for audit fields (batch runs, alias moves): `MUSICOPS_USER` when set (CI bots,
    shared service accounts name the person), else the login name, else "unknown" (a container
    without a passwd entry must still run)."""
    import getpass

    try:
        return os.environ.get("MUSICOPS_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
