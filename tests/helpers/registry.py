"""The tiny model registered in a state directory's MLflow registry."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def register_tiny(home: str | Path, name: str, alias: str | None = "champion", seed: int = 0,
                  settings: Any = None) -> str:
    """Register the musicgen-tiny preset (random init from `seed`) as a new version of `name` in the
    registry of state dir `home` and point `alias` at it (None: no alias). Returns the version.

    `settings` defaults to `get_settings(home)`; pass others to pin the stores (e.g. the state dir's own
    ones whatever the environment says)."""
    from mlflow import MlflowClient

    from musicops.config import get_settings
    from musicops.models.musicgen import TransformersMusicGen
    from musicops.registry import configure_mlflow
    from musicops.training.run import import_model_dir

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    settings = settings if settings is not None else get_settings(home)
    weights = Path(tempfile.mkdtemp(prefix=f"{name}-seed{seed}-", dir=home))
    version = import_model_dir(TransformersMusicGen.from_preset(seed=seed).save(weights), name, settings)
    if alias:
        configure_mlflow(settings)
        MlflowClient().set_registered_model_alias(name, alias, version)
    return version
