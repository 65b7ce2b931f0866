"""What every musicops kfp component does first: point the library at the right state and stores.

Components receive the state directory and tracking URI as plain parameters (empty = defaults),
so the same compiled pipeline runs under kfp.local or on a cluster with a real MLflow server.
"""

from __future__ import annotations

import os

from musicops.config import Settings, get_settings


def component_settings(musicops_home: str = "", mlflow_tracking_uri: str = "") -> Settings:
    if musicops_home:
        os.environ["MUSICOPS_HOME"] = musicops_home
    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    threads = os.environ.get("MUSICOPS_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return get_settings().ensure()
