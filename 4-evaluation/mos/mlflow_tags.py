"""Campaign results onto MLflow: each rated registered model version gets its MOS as version tags.

Why a module of its own: it is the one place MOS results meet the model registry, and it needs
MLflow, which the rating web app never loads. Why version tags (`MlflowClient.set_model_version_tag`):
they are MLflow's convention for annotations made after registration (validation status and the
like); the version's source run is the training run and stays as it was logged, and a later
campaign simply overwrites the tags.
"""

from __future__ import annotations

import math
from typing import Any

from musicops.evaluation.mos.models import CampaignResults


def tag_model_versions(results: CampaignResults, settings: Any = None) -> list[str]:
    """Tag each rated registered version with its MOS; returns the versions tagged.

    Model versions that are not registry URIs (presets, directories) are skipped; an unknown
    registry version fails before anything is tagged.
    """
    from mlflow import MlflowClient

    from musicops.registry import configure_mlflow, parse_model_uri, resolve_version

    configure_mlflow(settings)
    client = MlflowClient()
    planned = []
    for score in results.model_versions:
        try:
            ref = parse_model_uri(score.model_version)
        except ValueError:
            continue
        planned.append((resolve_version(ref, client), score))

    def fmt(value: float) -> str:
        return f"{value:.4f}" if math.isfinite(value) else "nan"

    tagged = []
    for version, score in planned:
        tags = {"mos": fmt(score.mos), "mos_ci_low": fmt(score.ci_low), "mos_ci_high": fmt(score.ci_high),
                "n_ratings": str(score.n_ratings), "campaign": results.campaign_id,
                "mos_campaign_name": results.name,
                "mos_method": results.method, "mos_n_raters": str(score.n_raters),
                "mos_confidence": f"{results.confidence:g}", "mos_alpha": fmt(results.alpha),
                "mos_quorum_met": str(results.quorum_met).lower()}
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, value)
        tagged.append(f"models:/{version.name}/{version.version}")
    return tagged
