"""The evaluation pipeline: the regression suite for a candidate against a baseline."""

from kfp import dsl

from musicops.components.evaluate import regression_suite


@dsl.pipeline(name="musicops-evaluate", description="Regression suite: candidate vs baseline, same prompts and seeds.")
def evaluate_pipeline(
    candidate: str,
    baseline: str,
    suite_path: str = "",
    musicops_home: str = "",
    mlflow_tracking_uri: str = "",
) -> str:
    task = regression_suite(candidate=candidate, baseline=baseline, suite_path=suite_path,
                            musicops_home=musicops_home, mlflow_tracking_uri=mlflow_tracking_uri)
    task.set_caching_options(False)
    return task.outputs["Output"]
