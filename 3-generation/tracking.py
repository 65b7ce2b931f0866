"""Recording a finished batch in MLflow: tags, params, metrics and an assets.json artifact.

Its own module so that MLflow is imported only when a batch is logged, and the batch run and the
kfp summary step log the same run the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from musicops import code_version
from musicops.config import Settings
from musicops.generation.planning import BatchPlan, options_dict
from musicops.generation.results import ClipOutcome


def log_batch_to_mlflow(plan: BatchPlan, outcomes: list[ClipOutcome], metrics: dict[str, float],
                        settings: Settings) -> str:
    import tempfile

    import mlflow

    from musicops.registry import configure_mlflow, ensure_experiment

    configure_mlflow(settings)
    experiment = ensure_experiment(settings, f"{settings.experiment}-batch")
    tags = {"musicops.batch_id": plan.batch_id, "musicops.model_uri": plan.model.pinned_uri,
            "musicops.prompts_sha256": plan.prompts_sha256, "musicops.code_version": code_version()}
    with mlflow.start_run(experiment_id=experiment, run_name=plan.batch_id, tags=tags) as run:
        mlflow.log_params({"model": plan.model.pinned_uri, "prompts_file": plan.prompts_file,
                           **{k: str(v) for k, v in options_dict(plan.options).items()}})
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "assets.json"
            path.write_text(json.dumps([{"asset_id": o.record.asset_id, "line": o.item.line_no,
                                         "variation": o.item.variation, "sha256": o.record.sha256,
                                         "passed": o.record.passed, "cache_hit": o.cache_hit}
                                        for o in outcomes], indent=1))
            mlflow.log_artifact(str(path))
        return run.info.run_id
