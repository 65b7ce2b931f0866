"""The regression suite flags silent and noisy candidates, passes a model against itself."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from musicops.cli import app
from musicops.evaluation.regression import PASS, REGRESSION, run_regression
from musicops.models.musicgen import TransformersMusicGen


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Real MusicGen directories: healthy (tiny), one whose codec outputs silence, one that outputs noise."""
    root = tmp_path_factory.mktemp("models")
    healthy = TransformersMusicGen.from_preset()
    paths = {"healthy": healthy.save(root / "healthy")}
    silent = TransformersMusicGen.from_preset()
    with torch.no_grad():
        for name, param in silent.model.audio_encoder.decoder.named_parameters():
            if name.startswith("layers.15.") and not name.endswith("original1"):
                param.zero_()  # the codec's output convolution: weight-norm gain and bias to zero
    paths["silent"] = silent.save(root / "silent")
    noisy = TransformersMusicGen.from_preset()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in noisy.model.audio_encoder.decoder.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    paths["noisy"] = noisy.save(root / "noisy")
    return paths


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("regression-home")


@pytest.fixture(autouse=True)
def _shared_home(home, monkeypatch):
    monkeypatch.setenv("MUSICOPS_HOME", str(home))  # share the asset cache across these tests


def _junit_failures(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [case.get("name") for case in root.iter("testcase") if case.find("failure") is not None]


def test_model_against_itself_passes(models, tmp_path) -> None:
    result = run_regression(str(models["healthy"]), str(models["healthy"]), out_dir=tmp_path)
    assert result.passed and result.exit_code == PASS, [c.detail for c in result.checks]
    assert result.metrics["frechet_distance"] >= 0 and result.metrics["drift_max"] <= 1e-6
    assert _junit_failures(tmp_path / "junit.xml") == []
    report = (tmp_path / "report.html").read_text()
    assert "<audio" in report and "data:image/png;base64," in report
    assert json.loads((tmp_path / "regression.json").read_text())["verdict"] == "pass"
    for row in result.rows:
        assert (tmp_path / "audio" / f"{row.candidate_audio}.wav").is_file()


def test_silent_candidate_is_flagged(models, tmp_path) -> None:
    result = run_regression(str(models["silent"]), str(models["healthy"]), out_dir=tmp_path)
    assert result.exit_code == REGRESSION
    assert "artifacts" in _junit_failures(tmp_path / "junit.xml")
    assert all("silence" in row.candidate_failed_checks for row in result.rows)


def test_candidate_emitting_nan_is_flagged_not_crashing(models, tmp_path) -> None:
    broken = TransformersMusicGen.from_dir(models["healthy"])
    with torch.no_grad():
        for name, param in broken.model.audio_encoder.decoder.named_parameters():
            if name.startswith("layers.15."):
                param.zero_()  # weight norm of an all-zero direction: 0/0, the codec emits NaN
    path = broken.save(tmp_path / "nan-model")
    result = run_regression(str(path), str(models["healthy"]), out_dir=tmp_path / "out")
    assert result.exit_code == REGRESSION
    assert all("finite" in row.candidate_failed_checks for row in result.rows)


def test_noisy_candidate_is_flagged(models, tmp_path) -> None:
    result = run_regression(str(models["noisy"]), str(models["healthy"]), out_dir=tmp_path)
    assert result.exit_code == REGRESSION
    assert "noise" in _junit_failures(tmp_path / "junit.xml")


def test_cli_exit_codes(models, tmp_path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["eval", "regression", "--candidate", str(models["healthy"]),
                             "--baseline", str(models["healthy"]), "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["eval", "regression", "--candidate", str(models["silent"]),
                              "--baseline", str(models["healthy"]), "--out", str(tmp_path / "b")])
    assert bad.exit_code == 1, bad.output
    missing = runner.invoke(app, ["eval", "regression", "--candidate", "models:/nope/1",
                                  "--baseline", str(models["healthy"]), "--out", str(tmp_path / "c")])
    assert missing.exit_code == 2 and "could not evaluate" in missing.output


def test_comparing_results_of_different_provenance_is_refused(models, tmp_path) -> None:
    run_regression(str(models["healthy"]), str(models["healthy"]), out_dir=tmp_path / "one")
    first = tmp_path / "one" / "regression.json"
    data = json.loads(first.read_text())
    data["provenance"]["embedder"] = "clap"
    data["provenance"]["window_s"] = 10.0
    second = tmp_path / "two.json"
    second.write_text(json.dumps(data))
    runner = CliRunner()
    same = runner.invoke(app, ["eval", "compare", str(first), str(first)])
    assert same.exit_code == 0, same.output
    refused = runner.invoke(app, ["eval", "compare", str(first), str(second)])
    assert refused.exit_code == 2 and "refused" in refused.output and "embedder" in refused.output


def test_evaluate_pipeline_runs_under_kfp_local(models) -> None:
    from musicops.config import get_settings
    from musicops.pipelines.local import run_local

    settings = get_settings()
    verdict = run_local("evaluate", {"candidate": str(models["silent"]), "baseline": str(models["healthy"]),
                                     "mlflow_tracking_uri": settings.mlflow_tracking_uri}, settings)
    assert verdict == "regression"
