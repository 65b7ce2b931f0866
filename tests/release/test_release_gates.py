"""Release gates end to end on a real MLflow registry: block a broken candidate, promote a healthy
one (old champion becomes `previous`), roll back, overrides need a reason, licences are enforced."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
import torch
from helpers.registry import register_tiny
from typer.testing import CliRunner

from musicops.cli import app
from musicops.config import get_settings
from musicops.models.musicgen import TransformersMusicGen
from musicops.registry import configure_mlflow
from musicops.release.promotion import current_alias

pytestmark = pytest.mark.slow  # a fine-tune, gate subprocesses and a kfp.local release pipeline


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """models:/m/1 champion (tiny), /2 healthy fine-tune, /3 broken (its codec outputs silence)."""
    from musicops.datasets.ingest import ingest
    from musicops.datasets.synth import synthesize
    from musicops.training.finetune import FineTuneConfig
    from musicops.training.run import fine_tune, import_model_dir, register_model

    home = tmp_path_factory.mktemp("release-home")
    settings = get_settings(home)
    assert register_tiny(home, "m", alias="champion", settings=settings) == "1"
    data = home / "data"
    synthesize(data, n=4, seed=0, duration_s=1.5)
    manifest = ingest(data, "rel", settings).version
    outcome = fine_tune(manifest.ref, "models:/m/1", FineTuneConfig(steps=3, segment_s=1.0), settings)
    assert register_model(outcome.model_uri, "m", outcome.tags, settings) == "2"
    broken = TransformersMusicGen.from_preset()
    with torch.no_grad():
        for name, param in broken.model.audio_encoder.decoder.named_parameters():
            if name.startswith("layers.15.") and not name.endswith("original1"):
                param.zero_()
    assert import_model_dir(broken.save(home / "broken"), "m", settings) == "3"
    return home


@pytest.fixture(autouse=True)
def _home(registry, monkeypatch):
    monkeypatch.setenv("MUSICOPS_HOME", str(registry))
    configure_mlflow(get_settings())


def _failing(junit) -> list[str]:
    return [c.get("name") for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]


def test_healthy_candidate_is_promoted_and_rollback_restores(tmp_path) -> None:
    result = CliRunner().invoke(app, ["gate", "--candidate", "models:/m/2", "--promote", "champion",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert current_alias("m", "champion") == "2" and current_alias("m", "previous") == "1"
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    skipped = [c.get("name") for c in junit.iter("testcase") if c.find("skipped") is not None]
    # recorded as skipped, never as passed; the tiny preset's lineage records no licence
    assert skipped == ["copyright", "mos", "licence"]
    summary = (tmp_path / "summary.md").read_text()
    assert "Skipped (not required): copyright, mos, licence" in summary and "Required gates: regression" in summary
    page = (tmp_path / "release.html").read_text()
    assert "Metric deltas" in page and "<audio" in page and "Per-prompt outliers" in page
    for sha in re.findall(r"src='(regression/audio/[0-9a-f]{64}\.wav)'", page):
        assert (tmp_path / sha).is_file()
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version("m", "2").tags
    assert tags["musicops.gate.regression"] == "pass" and tags["musicops.gate.mos"] == "skipped"

    rolled = CliRunner().invoke(app, ["registry", "rollback", "m"])
    assert rolled.exit_code == 0, rolled.output
    # v2 was rolled back from: it is not kept as `previous`, so a second rollback cannot re-promote it
    assert current_alias("m", "champion") == "1" and current_alias("m", "previous") is None


def test_broken_candidate_is_blocked_and_champion_stays(tmp_path) -> None:
    before = current_alias("m", "champion")
    result = CliRunner().invoke(app, ["gate", "--candidate", "models:/m/3", "--promote", "champion",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "regression" in _failing(tmp_path / "junit.xml")
    assert current_alias("m", "champion") == before
    assert "not promoted" in result.output


def test_override_needs_a_reason_and_is_recorded() -> None:
    from mlflow import MlflowClient

    refused = CliRunner().invoke(app, ["registry", "promote", "m", "3"])
    assert refused.exit_code == 2 and "override-reason" in refused.output
    before = current_alias("m", "champion")
    assert before != "3"
    done = CliRunner().invoke(app, ["registry", "promote", "m", "3", "--override-reason", "hotfix for demo"],
                              env={"MUSICOPS_USER": "alice"})
    assert done.exit_code == 0, done.output
    tags = MlflowClient().get_model_version("m", "3").tags
    assert tags["musicops.override_reason"] == "hotfix for demo" and tags["musicops.override_by"] == "alice"
    assert current_alias("m", "champion") == "3" and current_alias("m", "previous") == before
    CliRunner().invoke(app, ["registry", "rollback", "m"])


def test_non_commercial_weights_cannot_become_a_commercial_champion(tmp_path, monkeypatch) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag("m", "2", "musicops.licence", "cc-by-nc-4.0")
    monkeypatch.setenv("MUSICOPS_COMMERCIAL_ALIASES", "champion")
    result = CliRunner().invoke(app, ["gate", "--candidate", "models:/m/2", "--baseline", "models:/m/1",
                                      "--promote", "champion", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "licence" in _failing(tmp_path / "junit.xml")
    MlflowClient().set_model_version_tag("m", "2", "musicops.licence", "apache-2.0")


def test_required_gates_that_were_skipped_fail_and_no_override_stands_in(tmp_path) -> None:
    import json

    before = current_alias("m", "champion")
    result = CliRunner().invoke(app, ["gate", "--candidate", "models:/m/2", "--baseline", "models:/m/1",
                                      "--require", "regression,copyright,mos", "--promote", "champion",
                                      "--override-reason", "ship it", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["required_gates"] == ["regression", "copyright", "mos"]
    assert report["skipped_required"] == ["copyright", "mos"] and report["verdict"] == "fail"
    assert "override refused" in report["promotion"]["detail"] and current_alias("m", "champion") == before
    assert _failing(tmp_path / "junit.xml") == ["copyright", "mos"]
    assert "Required but skipped: copyright, mos" in (tmp_path / "release.html").read_text()
    plain = CliRunner().invoke(app, ["gate", "--candidate", "models:/m/2", "--baseline", "models:/m/1",
                                     "--require", "copyright", "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 1 and "copyright: required but skipped" in plain.output


def test_unknown_candidate_could_not_evaluate(tmp_path) -> None:
    result = CliRunner().invoke(app, ["gate", "--candidate", "models:/m/99", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "could not evaluate" in result.output


def test_release_pipeline_under_kfp_local_promotes_a_healthy_candidate() -> None:
    from mlflow import MlflowClient

    from musicops.pipelines.local import run_local

    MlflowClient().set_registered_model_alias("m", "champion", "1")
    settings = get_settings()
    outcome = run_local("release", {"candidate": "models:/m/2", "baseline": "models:/m@champion",
                                    "mlflow_tracking_uri": settings.mlflow_tracking_uri}, settings)
    assert outcome == "promoted models:/m/2 to @champion"
    assert current_alias("m", "champion") == "2" and current_alias("m", "previous") == "1"
    assert MlflowClient().get_model_version("m", "2").tags["musicops.gate.copyright"] == "skipped"
    CliRunner().invoke(app, ["registry", "rollback", "m"])
