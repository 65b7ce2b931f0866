"""The fine-tune pipeline, run for real with kfp.local's SubprocessRunner, and compiled to IR YAML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from musicops.cli import app
from musicops.config import get_settings

pytestmark = pytest.mark.slow  # runs a kfp.local pipeline


def test_cli_run_registers_a_version_and_prints_one_line_per_step(synth_dir) -> None:
    from mlflow import MlflowClient

    from musicops.datasets.manifest import latest_version
    from musicops.registry import configure_mlflow

    settings = get_settings()
    result = CliRunner().invoke(app, ["pipelines", "run", "fine-tune", str(synth_dir), "--dataset-name", "pipe-set",
                                      "--registered-name", "pipe-model", "--steps", "3", "--segment-s", "1.0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    tasks = ["ingest-dataset", "validate-dataset", "fine-tune-model", "register-model-version"]
    step_lines = [line for line in lines if line.split(" ", 1)[0] in tasks]
    assert [line.split()[0] for line in step_lines] == tasks, result.output
    assert all(line.split()[1] == "ok" for line in step_lines)
    assert "candidate.n_rows=6" in step_lines[0] and "Output=1" in step_lines[-1]
    assert "Executing task" not in result.output, "kfp's executor logs belong in the log file"
    assert lines[-1] == "registered models:/pipe-model/1"
    log = Path(next(line for line in lines if line.startswith("log: "))[5:])
    assert log.is_file() and log.parent.is_relative_to(settings.kfp_root)
    assert "Executing task" in log.read_text() and (log.parent / "pipeline.yaml").is_file()
    # the manifest handed to training carries its audio inside the artifact, by artifact-relative paths
    import pandas as pd

    (handed,) = log.parent.rglob("manifest/manifest.parquet")
    paths = list(pd.read_parquet(handed)["path"])
    assert len(paths) == 6 and all(p.startswith("audio/") and (handed.parent / p).is_file() for p in paths)

    manifest = latest_version("pipe-set", settings)
    assert (manifest.directory / "report.html").is_file()
    configure_mlflow(settings)
    registered = MlflowClient().get_model_version("pipe-model", "1")
    assert registered.tags["musicops.dataset_hash"] == manifest.dataset_hash
    assert registered.tags["musicops.base_model"] == "musicgen-tiny"


def test_pipeline_stops_at_ingest_on_a_corrupt_file(synth_dir, tmp_path) -> None:
    from musicops.datasets.manifest import list_versions

    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    (bad / "broken.wav").write_text("this is not audio")
    settings = get_settings()
    result = CliRunner().invoke(app, ["pipelines", "run", "fine-tune", str(bad), "--dataset-name", "bad-set",
                                      "--steps", "2", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and [s["task"] for s in report["steps"]] == ["ingest-dataset"]
    assert report["steps"][0]["status"] == "failed"
    assert "step ingest-dataset failed" in report["error"] and report["log"] in report["error"]
    assert any("broken.wav" in line for line in report["steps"][0]["tail"]), "the failing step's last log lines"
    assert Path(report["log"]).is_file()
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
