"""Every pipeline by its CLI name: one place that `run` and `compile` both read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PIPELINES: dict[str, str] = {
    "fine-tune": "musicops.pipelines.fine_tune:fine_tune_pipeline",
    "batch-generate": "musicops.pipelines.batch_generate:batch_generate_pipeline",
    "evaluate": "musicops.pipelines.evaluate:evaluate_pipeline",
    "release": "musicops.pipelines.release:release_pipeline",
}


def get_pipeline(name: str) -> Callable[..., Any]:
    import importlib

    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}")
    module, attr = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), attr)
