"""Every pipeline by its CLI name: one place that `run` and `compile` both read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from musicops.pipelines.profile import LOCAL, Profile

# name -> module holding `build(profile)`
PIPELINES: dict[str, str] = {
    "fine-tune": "musicops.pipelines.fine_tune",
    "batch-generate": "musicops.pipelines.batch_generate",
    "evaluate": "musicops.pipelines.evaluate",
    "release": "musicops.pipelines.release",
}


def get_pipeline(name: str, profile: Profile = LOCAL) -> Callable[..., Any]:
    """The pipeline `name` built with `profile` (the local default adds no cluster settings)."""
    import importlib

    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}")
    return importlib.import_module(PIPELINES[name]).build(profile)
