"""The regression suite flags silent and noisy candidates, passes a model against itself, and holds
absolute floors that no baseline and no suite file can lower."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from musicops.audio.checks import CHECK_NAMES
from musicops.cli import app
from musicops.evaluation.regression import (
    BUILTIN_FLOORS,
    DEFAULT_SUITE,
    PASS,
    REGRESSION,
    SuiteError,
    floor_checks,
    load_suite,
    run_floors,
    run_regression,
)
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


@pytest.mark.slow  # ~7 s of CLI evaluations
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


@pytest.mark.slow  # runs a kfp.local pipeline
def test_evaluate_pipeline_runs_under_kfp_local(models) -> None:
    from musicops.config import get_settings
    from musicops.pipelines.local import run_local

    settings = get_settings()
    verdict = run_local("evaluate", {"candidate": str(models["silent"]), "baseline": str(models["healthy"]),
                                     "mlflow_tracking_uri": settings.mlflow_tracking_uri}, settings)
    assert verdict == "regression"


def test_silent_candidate_against_a_silent_baseline_fails_the_absolute_floors(models, tmp_path) -> None:
    """Relative to a broken baseline nothing got worse; the floors still fail it."""
    result = run_regression(str(models["silent"]), str(models["silent"]), out_dir=tmp_path)
    assert result.exit_code == REGRESSION
    failures = _junit_failures(tmp_path / "junit.xml")
    assert {"floor_quality_checks", "floor_silence"} <= set(failures) and "artifacts" not in failures
    assert result.suite["sha256"] == hashlib.sha256(DEFAULT_SUITE.read_bytes()).hexdigest()


def test_suite_floors_can_tighten_but_never_loosen(tmp_path) -> None:
    data = json.loads(DEFAULT_SUITE.read_text())
    data["floors"] = {"max_silence_rate": 1.0, "max_check_failure_rate": 0.0, "min_clap_score": 0.0,
                      "noise_flatness": 0.2}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(data))
    suite = load_suite(path)
    assert suite.floors["max_silence_rate"] == BUILTIN_FLOORS["max_silence_rate"]  # looser: ignored
    assert suite.floors["min_clap_score"] == BUILTIN_FLOORS["min_clap_score"]  # lower is looser here
    assert suite.floors["max_check_failure_rate"] == 0.0 and suite.floors["noise_flatness"] == 0.2  # tighter
    assert suite.floors_ignored == {"max_silence_rate": 1.0, "min_clap_score": 0.0}
    shipped = load_suite(DEFAULT_SUITE)
    assert not shipped.floors_ignored
    assert all(shipped.floors[k] <= v for k, v in BUILTIN_FLOORS.items() if k != "min_clap_score")


@pytest.mark.parametrize("floors, message", [({"max_silense_rate": 0.0}, "unknown floor"),
                                             ({"max_silence_rate": "none"}, "finite number"),
                                             ({"max_silence_rate": float("nan")}, "finite number")])
def test_unusable_floors_make_the_suite_unusable(tmp_path, floors, message) -> None:
    data = json.loads(DEFAULT_SUITE.read_text())
    data["floors"] = floors
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def _record(failed: tuple[str, ...] = (), flatness: float = 0.01) -> SimpleNamespace:
    checks = [{"name": name, "passed": name not in failed, "value": flatness if name == "spectral_flatness" else 0.0,
               "detail": ""} for name in CHECK_NAMES]
    return SimpleNamespace(checks=checks, passed=not failed)


def test_floor_checks_count_rates_and_apply_the_clap_floor_only_with_real_weights() -> None:
    records = [_record(), _record(("silence", "loudness")), _record(flatness=0.5), _record()]
    floors = dict(BUILTIN_FLOORS, max_silence_rate=0.0, max_noise_rate=0.0)
    checks, metrics = floor_checks(records, np.array([0.3, 0.0, 0.1, 0.3]), floors, real_clap=False)
    by_name = {c.name: c for c in checks}
    assert metrics["silence_rate"] == 0.25 and metrics["noise_rate"] == 0.25 and metrics["check_failure_rate"] == 0.25
    assert not by_name["floor_silence"].passed and not by_name["floor_noise"].passed
    assert by_name["floor_nonfinite"].passed and "floor_clap_score" not in by_name  # random-init CLAP: no floor
    low = np.array([0.01, 0.02, 0.0, 0.03])
    checks, metrics = floor_checks(records, low, floors, real_clap=True)
    clap = next(c for c in checks if c.name == "floor_clap_score")
    assert not clap.passed and metrics["clap_mean"] == pytest.approx(0.015)
    checks, _ = floor_checks(records, low + 0.2, floors, real_clap=True)
    assert next(c for c in checks if c.name == "floor_clap_score").passed


def test_first_release_floors_pass_a_healthy_model_and_fail_a_silent_one(models) -> None:
    healthy = run_floors(str(models["healthy"]))
    assert healthy.passed, [c.detail for c in healthy.checks]
    assert len(healthy.candidate_assets) == len(load_suite().prompts)
    silent = run_floors(str(models["silent"]))
    assert not silent.passed
    assert {c.name for c in silent.checks if not c.passed} >= {"floor_silence", "floor_quality_checks"}


def test_suite_names_real_clap_weights_relative_to_itself(tmp_path) -> None:
    """A suite with real CLAP weights travels with them; its CLAP floor then applies."""
    data = json.loads(DEFAULT_SUITE.read_text())
    data.update(embedder="clap", embedder_path="weights/clap-htsat-unfused")
    path = tmp_path / "suites" / "real.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    suite = load_suite(path)
    assert suite.embedder == "clap" and suite.embedder_path == str(tmp_path / "suites" / "weights" / "clap-htsat-unfused")
    assert suite.floors["min_clap_score"] == 0.1
