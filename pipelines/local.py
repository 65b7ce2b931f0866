"""Run a pipeline on this machine with kfp.local's SubprocessRunner (no cluster, no Docker).

Each step runs in a subprocess of the current interpreter (`use_venv=False`), with kfp and musicops
already installed (components are built with `install_kfp_package=False`).
"""

from __future__ import annotations

import warnings
from typing import Any

from musicops.config import Settings, get_settings


def run_local(name: str, arguments: dict[str, Any], settings: Settings | None = None) -> Any:
    """Run pipeline `name` locally; returns its output (None if it has none). Raises on a failed step."""
    from kfp import local

    from musicops.pipelines.catalog import get_pipeline

    settings = (settings or get_settings()).ensure()
    pipeline = get_pipeline(name)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(settings.kfp_root),
               raise_on_error=True)
    arguments = {"musicops_home": str(settings.home), **arguments}
    with warnings.catch_warnings():
        # Known and harmless under the local runner: display names and the cluster image are ignored.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        task = pipeline(**arguments)
    outputs = getattr(task, "outputs", {}) or {}
    return outputs.get("Output") if isinstance(outputs, dict) else None
