"""kfp component for the regression suite: the same `run_regression` the CLI calls."""

# No `from __future__ import annotations` here: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from musicops.components.image import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def regression_suite(candidate: str, baseline: str, suite_path: str, musicops_home: str,
                     mlflow_tracking_uri: str, report: Output[HTML], results: Output[Artifact],
                     metrics: Output[Metrics]) -> str:
    """Returns "pass" or "regression" (a regression does not fail the step: the caller decides)."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from musicops.components.runtime import component_settings
    from musicops.evaluation.regression import DEFAULT_SUITE, run_regression

    settings = component_settings(musicops_home, mlflow_tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_regression(candidate, baseline, suite_path or DEFAULT_SUITE, Path(tmp), settings)
        html = (Path(tmp) / "report.html").read_text()
        # audio players point at files beside the report: inline paths are lost in an artifact, so keep JSON too
        shutil.copyfile(Path(tmp) / "regression.json", results.path)
    with open(report.path, "w") as handle:
        handle.write(html)
    for check in result.checks:
        metrics.log_metric(f"gate_{check.name}_passed", float(check.passed))
    metrics.log_metric("frechet_distance", float(result.metrics["frechet_distance"]))
    metrics.log_metric("clap_mean_delta", float(result.metrics["clap"]["mean_delta"]))
    results.metadata["verdict"] = json.dumps("pass" if result.passed else "regression")
    return "pass" if result.passed else "regression"
