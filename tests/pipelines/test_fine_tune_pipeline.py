"""The fine-tune pipeline, run for real with kfp.local's SubprocessRunner, and compiled to IR YAML."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from musicops.cli import app
from musicops.config import get_settings

pytestmark = pytest.mark.slow  # runs a kfp.local pipeline


def test_whole_pipeline_runs_locally_and_registers_a_version(synth_dir) -> None:
    from mlflow import MlflowClient

    from musicops.datasets.manifest import latest_version
    from musicops.pipelines.local import run_local
    from musicops.registry import configure_mlflow

    settings = get_settings()
    version = run_local("fine-tune", {
        "source_dir": str(synth_dir), "dataset_name": "pipe-set", "registered_name": "pipe-model",
        "steps": 3, "segment_s": 1.0, "mlflow_tracking_uri": settings.mlflow_tracking_uri,
    }, settings)
    assert version == "1"
    manifest = latest_version("pipe-set", settings)
    assert (manifest.directory / "report.html").is_file()
    configure_mlflow(settings)
    registered = MlflowClient().get_model_version("pipe-model", "1")
    assert registered.tags["musicops.dataset_hash"] == manifest.dataset_hash
    assert registered.tags["musicops.base_model"] == "musicgen-tiny"
    assert any(settings.kfp_root.iterdir()), "kfp.local writes step outputs under the pipeline root"


def test_pipeline_stops_at_ingest_on_a_corrupt_file(synth_dir, tmp_path) -> None:
    from musicops.datasets.manifest import list_versions
    from musicops.pipelines.local import run_local

    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    (bad / "broken.wav").write_text("this is not audio")
    settings = get_settings()
    with pytest.raises(RuntimeError, match="ingest-dataset"):
        run_local("fine-tune", {"source_dir": str(bad), "dataset_name": "bad-set", "steps": 2}, settings)
    assert list_versions("bad-set", settings) == []


def test_compile_writes_one_loadable_yaml_per_pipeline(tmp_path) -> None:
    from kfp import components

    from musicops.pipelines.catalog import PIPELINES

    result = CliRunner().invoke(app, ["pipelines", "compile", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = sorted(p.stem for p in (tmp_path / "out").glob("*.yaml"))
    assert written == sorted(PIPELINES)
    for name in written:
        loaded = components.load_component_from_file(str(tmp_path / "out" / f"{name}.yaml"))
        assert loaded.pipeline_spec is not None
        assert "source_dir" in loaded.component_spec.inputs or name != "fine-tune"
