"""The evaluation pipeline: the regression suite for a candidate against a baseline."""

# No `from __future__ import annotations` here: kfp reads the pipeline's real annotation objects.
from typing import Any

from kfp import dsl

from musicops.components.evaluate import regression_suite
from musicops.pipelines.profile import LOCAL, Profile


def build(profile: Profile = LOCAL) -> Any:
    """Not cacheable: `candidate` and `baseline` may be aliases, which move without the string changing."""

    @dsl.pipeline(name="musicops-evaluate",
                  description="Regression suite: candidate vs baseline, same prompts and seeds.")
    def evaluate_pipeline(
        candidate: str,
        baseline: str,
        suite_path: str = "",
        musicops_home: str = "",
        mlflow_tracking_uri: str = "",
    ) -> str:
        task = profile.step(regression_suite(candidate=candidate, baseline=baseline, suite_path=suite_path,
                                             musicops_home=musicops_home, mlflow_tracking_uri=mlflow_tracking_uri),
                            cache=False, model=True)
        return task.outputs["Output"]

    return evaluate_pipeline


evaluate_pipeline = build()
