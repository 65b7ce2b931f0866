"""Release gates that cannot be fooled (issue #14 items 1 and 6), on real processes.

Each check runs the `musicops` CLI as a subprocess against a real MLflow sqlite registry. The silent
model is a real tiny MusicGen whose EnCodec output convolution has its weight-norm gain and bias
zeroed: it generates, post-processes and stores clips like any model, and they are silent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.registry import register_tiny

from musicops.config import get_settings
from musicops.evaluation.regression import BUILTIN_FLOORS, DEFAULT_SUITE
from musicops.models.musicgen import TransformersMusicGen
from musicops.registry import configure_mlflow

pytestmark = pytest.mark.slow  # each check runs the musicops CLI gate as a subprocess (~5-40 s)

NAME = "m"


def _silent_model() -> TransformersMusicGen:
    model = TransformersMusicGen.from_preset()
    with torch.no_grad():
        for name, param in model.model.audio_encoder.decoder.named_parameters():
            if name.startswith("layers.15.") and not name.endswith("original1"):
                param.zero_()  # the codec's output convolution: weight-norm gain and bias to zero
    return model


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """models:/m/1 healthy tiny, /2 silent, /3 healthy (same weights as 1), /4 silent (a second copy)."""
    from musicops.training.run import import_model_dir

    home = tmp_path_factory.mktemp("hardening-home")
    settings = get_settings(home)
    silent = _silent_model().save(home / "silent")
    assert register_tiny(home, NAME, alias=None, settings=settings) == "1"
    assert import_model_dir(silent, NAME, settings) == "2"
    assert register_tiny(home, NAME, alias=None, settings=settings) == "3"
    assert import_model_dir(silent, NAME, settings) == "4"
    return home


@pytest.fixture(autouse=True)
def _home(home, monkeypatch) -> None:
    monkeypatch.setenv("MUSICOPS_HOME", str(home))
    configure_mlflow(get_settings())


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def cli(*args: str, user: str = "ci-bot") -> subprocess.CompletedProcess:
    """`python -m musicops.cli ...` in a real process (the venv's interpreter running these tests)."""
    env = {**os.environ, "MUSICOPS_USER": user}
    return subprocess.run([sys.executable, "-m", "musicops.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _json(result: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"stdout is not JSON:\n{result.stdout}\nstderr:\n{result.stderr}") from None


def _reset(champion: str | None, name: str = NAME) -> None:
    """Start a test from a known champion with no recorded history (set straight in the registry)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    for alias in ("champion", "previous"):
        with contextlib.suppress(MlflowException):  # absent is fine
            client.delete_registered_model_alias(name, alias)
    with contextlib.suppress(MlflowException):
        client.delete_registered_model_tag(name, "musicops.alias_history.champion")
    if champion:
        client.set_registered_model_alias(name, "champion", champion)


def _champion(name: str = NAME) -> str | None:
    from musicops.release.promotion import current_alias

    return current_alias(name, "champion")


def _tags(version: str) -> dict[str, str]:
    return dict(_client().get_model_version(NAME, version).tags)


def test_silent_candidate_as_its_own_baseline_is_refused_and_nothing_moves(tmp_path) -> None:
    _reset("1")
    result = cli("gate", "--candidate", "models:/m/2", "--baseline", "models:/m/2", "--promote", "champion",
                 "--out", str(tmp_path / "r"), "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "its own baseline" in _json(result)["detail"] and "its own baseline" in result.stderr
    assert _champion() == "1"
    assert "musicops.release_verdict" not in _tags("2")  # nothing was evaluated
    # the same through the default baseline: v1 is champion, so gating v1 again compares it with itself
    again = cli("gate", "--candidate", "models:/m/1", "--promote", "champion", "--out", str(tmp_path / "s"))
    assert again.returncode == 2 and "its own baseline" in again.stderr
    assert _champion() == "1"


def test_silent_candidate_against_a_silent_champion_fails_on_the_floors(tmp_path) -> None:
    _reset("2")  # a broken champion exists: relative checks alone would pass a broken candidate
    result = cli("gate", "--candidate", "models:/m/4", "--promote", "champion", "--out", str(tmp_path), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = _json(result)
    assert report["baseline"] == "models:/m/2" and report["verdict"] == "fail" and report["exit_code"] == 1
    checks = {c["name"]: c for c in report["gates"][0]["figures"]["checks"]}
    assert checks["artifacts"]["passed"]  # relative to the silent champion, nothing got worse ...
    assert not checks["floor_silence"]["passed"] and not checks["floor_quality_checks"]["passed"]  # ... floors
    assert not report["promotion"]["promoted"]
    assert _champion() == "2"
    sha = hashlib.sha256(DEFAULT_SUITE.read_bytes()).hexdigest()
    assert report["suite"]["sha256"] == sha
    tags = _tags("4")
    assert tags["musicops.release_verdict"] == "fail" and tags["musicops.release_suite_sha256"] == sha
    assert tags["musicops.release_baseline"] == "models:/m/2"
    assert sha in (tmp_path / "summary.md").read_text()


def test_loosened_suite_file_cannot_pass_a_silent_model(tmp_path) -> None:
    _reset("2")
    data = json.loads(DEFAULT_SUITE.read_text())
    data["floors"] = {"max_check_failure_rate": 1.0, "max_silence_rate": 1.0, "max_nonfinite_rate": 1.0,
                      "max_noise_rate": 1.0, "noise_flatness": 1.0, "min_clap_score": -1.0}
    data["thresholds"].update(max_artifact_rate_increase=1.0, max_flatness_ratio=1e9, max_clap_score_drop=10.0)
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps(data))
    result = cli("gate", "--candidate", "models:/m/4", "--suite", str(loose), "--promote", "champion",
                 "--out", str(tmp_path / "r"), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = _json(result)
    assert report["suite"]["sha256"] == hashlib.sha256(loose.read_bytes()).hexdigest()
    assert report["suite"]["floors"] == BUILTIN_FLOORS  # every looser value fell back to the minimum
    assert set(report["suite"]["floors_ignored"]) == set(BUILTIN_FLOORS)
    assert "ignored" in report["gates"][0]["detail"]
    assert _champion() == "2"


def test_first_release_of_a_silent_model_fails_on_the_floors(tmp_path) -> None:
    from musicops.training.run import import_model_dir

    settings = get_settings()
    assert import_model_dir(Path(settings.home) / "silent", "fresh", settings) == "1"
    result = cli("gate", "--candidate", "models:/fresh/1", "--promote", "champion", "--out", str(tmp_path), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = _json(result)
    assert report["baseline"] is None
    assert "first release" in report["gates"][0]["detail"] and "floor_silence" in report["gates"][0]["detail"]
    assert _champion("fresh") is None


def test_override_after_a_failed_gate_promotes_exits_0_and_is_recorded(tmp_path) -> None:
    _reset("1")
    blocked = cli("gate", "--candidate", "models:/m/2", "--promote", "champion", "--out", str(tmp_path / "a"))
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert _champion() == "1"
    result = cli("gate", "--candidate", "models:/m/2", "--promote", "champion", "--out", str(tmp_path / "b"),
                 "--override-reason", "silence is the product this week", "--json", user="alice")
    assert result.returncode == 0, result.stdout + result.stderr
    report = _json(result)
    assert report["verdict"] == "fail" and report["exit_code"] == 0  # the gate's verdict stays honest
    assert report["override"]["by"] == "alice" and report["override"]["failed_gates"] == ["regression"]
    assert report["override"]["reason"] == "silence is the product this week" and report["override"]["at"]
    assert report["promotion"]["promoted"] and _champion() == "2"
    tags = _tags("2")
    assert tags["musicops.override_reason"] == "silence is the product this week"
    assert tags["musicops.override_by"] == "alice" and tags["musicops.override_failed_gates"] == "regression"
    assert tags["musicops.override_at"] and tags["musicops.release_verdict"] == "fail"
    summary = (tmp_path / "b" / "summary.md").read_text()
    assert "Overridden" in summary and "alice" in summary
    saved = json.loads((tmp_path / "b" / "release.json").read_text())
    assert saved["override"]["failed_gates"] == ["regression"] and saved["exit_code"] == 0


def test_override_when_a_gate_could_not_evaluate_is_refused(tmp_path) -> None:
    _reset("1")
    data = json.loads(DEFAULT_SUITE.read_text())
    data["floors"] = {"max_silense_rate": 1.0}  # a typo: the regression gate cannot evaluate with this suite
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(data))
    result = cli("gate", "--candidate", "models:/m/2", "--suite", str(typo), "--promote", "champion",
                 "--override-reason", "ship it", "--out", str(tmp_path / "r"), "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    report = _json(result)
    assert report["verdict"] == "could not evaluate" and "max_silense_rate" in report["gates"][0]["detail"]
    assert "override refused" in report["promotion"]["detail"] and "regression" in report["promotion"]["detail"]
    assert report["override"] is None and not report["promotion"]["promoted"]
    assert _champion() == "1"
    assert _tags("2").get("musicops.override_reason") != "ship it"


def test_rollback_twice_never_repromotes_the_version_rolled_back_from() -> None:
    from musicops.release.promotion import alias_history

    _reset("1")
    for version in ("3", "2"):
        done = cli("registry", "promote", "m", version, "--override-reason", f"test v{version}")
        assert done.returncode == 0, done.stdout + done.stderr
    assert alias_history(NAME) == ["1", "3", "2"] and _champion() == "2"

    first = cli("registry", "rollback", "m", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _json(first)["version"] == "3" and _champion() == "3"
    second = cli("registry", "rollback", "m", "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    assert _json(second)["version"] == "1" and _champion() == "1"  # further back, never forward to 2
    third = cli("registry", "rollback", "m", "--json")
    assert third.returncode == 2 and "nothing further" in _json(third)["detail"]
    assert _champion() == "1"
    assert _json(cli("registry", "history", "m", "--json"))["history"] == ["1"]
    assert "musicops.rolled_back_from" in _tags("2") and "musicops.rolled_back_from" in _tags("3")


def test_rollback_twice_after_one_promotion_leaves_the_same_champion() -> None:
    _reset("1")
    assert cli("registry", "promote", "m", "3", "--override-reason", "test").returncode == 0
    assert cli("registry", "rollback", "m").returncode == 0
    assert _champion() == "1"
    again = cli("registry", "rollback", "m")
    assert again.returncode == 2 and "nothing further" in again.stderr
    assert _champion() == "1"


def test_rollback_of_a_registry_left_by_the_old_swap_does_not_re_promote() -> None:
    """Before the history existed, rollback swapped champion/previous and tagged the restored version."""
    _reset("1")
    client = _client()
    client.set_registered_model_alias(NAME, "previous", "3")  # the version the old rollback left behind
    client.set_model_version_tag(NAME, "1", "musicops.rolled_back_to", "champion at 2025-01-01 by bob")
    result = cli("registry", "rollback", "m")
    assert result.returncode == 2 and "nothing further" in result.stderr
    assert _champion() == "1"
    client.delete_model_version_tag(NAME, "1", "musicops.rolled_back_to")
