"""musicops: MLOps pipelines and evaluation for AI music generation.

Keep this module import-light: the CLI imports it on every start.
"""

from __future__ import annotations

import functools
import os

__version__ = "0.1.0"

# No network here, and none assumed for users: MLflow's telemetry sender otherwise waits at exit
# (minutes, measured) trying to reach its server. Users may still opt in by setting these.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@functools.cache
def code_version() -> str:
    """The code version recorded in provenance: package version plus git commit when known.

    Cached: it runs git twice (~4 ms) and is asked for per asset.
    """
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}" if sha else __version__
