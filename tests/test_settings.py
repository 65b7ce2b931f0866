"""One Settings object: every MUSICOPS_* variable read in musicops.config, validated, passed down."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.layout import ROOT, source_files

from musicops.config import Settings, SettingsError, get_settings


def test_environment_is_read_and_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MUSICOPS_COMMERCIAL_ALIASES", " champion, , prod ")
    monkeypatch.setenv("MUSICOPS_TORCH_THREADS", "2")
    monkeypatch.setenv("MUSICOPS_SERVE_SECRET", "s3cr3t-" * 6)
    settings = get_settings()
    assert settings.home == (tmp_path / "state").resolve()
    assert settings.mlflow_tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"
    assert settings.database_url == f"sqlite:///{settings.home / 'provenance.db'}"
    assert settings.commercial_aliases == ("champion", "prod") and settings.torch_threads == 2
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.model_dump())
    assert get_settings(tmp_path / "cli-home").home == (tmp_path / "cli-home").resolve()  # --home wins


@pytest.mark.parametrize(("name", "value"), [("MUSICOPS_PRICE_PER_HOUR", "abc"), ("MUSICOPS_TORCH_THREADS", "0"),
                                             ("MUSICOPS_JOB_LEASE_S", "0.1")])
def test_bad_values_name_their_variable(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as info:
        get_settings()
    assert info.value.exit_code == 2


def test_cli_reports_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MUSICOPS_HOME": str(tmp_path), "MUSICOPS_PRICE_PER_HOUR": "lots"}
    result = subprocess.run([sys.executable, "-m", "musicops.cli", "db", "current", "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "MUSICOPS_PRICE_PER_HOUR" in result.stderr and "Traceback" not in result.stderr


def test_explicit_values_ignore_the_environment_and_replace_rederives(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICOPS_MODEL_NAME", "from-env")
    explicit = Settings.from_values(home=tmp_path / "a")
    assert explicit.registered_model_name == "musicops-musicgen"
    moved = explicit.replace(home=tmp_path / "b")
    assert moved.mlflow_tracking_uri == f"sqlite:///{(tmp_path / 'b').resolve() / 'mlflow.db'}"
    kept = explicit.replace(mlflow_tracking_uri="http://127.0.0.1:5000").replace(home=tmp_path / "c")
    assert kept.mlflow_tracking_uri == "http://127.0.0.1:5000"


def test_component_settings_never_write_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from musicops.components.runtime import component_settings

    monkeypatch.delenv("MUSICOPS_HOME", raising=False)
    before = dict(os.environ)
    settings = component_settings(str(tmp_path / "pod-home"), "")
    assert settings.home == (tmp_path / "pod-home").resolve() and settings.kfp_root.is_dir()
    assert dict(os.environ) == before
    from musicops import progress

    assert progress._current.get() is None  # step-log progress is for kfp's executor process only


def _environment_reads(path: Path) -> list[str]:
    """`os.environ[...]` / `os.environ.get(...)` / `os.getenv(...)` naming a MUSICOPS_ variable."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            target = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"} and node.args:
            target = node.args[0]
        if target is not None:
            text = ast.unparse(target)
            if "MUSICOPS" in text or "_ENV" in text:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_musicops_config_reads_musicops_variables() -> None:
    reads = [hit for path in source_files() if path != ROOT / "musicops" / "config.py"
             for hit in _environment_reads(path)]
    assert reads == []


def test_the_check_sees_a_planted_read(tmp_path: Path) -> None:
    planted = ROOT / "tests" / "_planted_env_read.py"
    try:
        planted.write_text('import os\nx = os.environ.get("MUSICOPS_HOME")\ny = os.environ["MUSICOPS_X"]\n')
        assert len(_environment_reads(planted)) == 2
    finally:
        planted.unlink()
