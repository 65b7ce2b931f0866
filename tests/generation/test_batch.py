"""Batch generation end to end on a registered model: delivery guarantees, provenance, cache, crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.registry import register_tiny

from musicops.audio.encode import read_tags
from musicops.audio.measure import integrated_loudness, true_peak_dbtp
from musicops.config import get_settings
from musicops.generation.batch import run_batch
from musicops.generation.planning import BatchOptions
from musicops.generation.prompts import PromptsFileError
from musicops.registry import ModelNotFoundError
from musicops.store.assets import TEMP_PREFIX, open_asset_store
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # generates with a registered model (module fixture ~10 s), kills a batch subprocess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REQUIRED_FIELDS = ("asset_id", "sha256", "prompt", "normalized_prompt", "seed", "params", "model_name",
                   "model_version", "model_run_id", "model_uri", "user", "code_version", "postprocess",
                   "loudness_before", "loudness_after", "true_peak_after", "checks", "created_at", "batch_id")
QUIET = BatchOptions(log_to_mlflow=False)


@pytest.fixture(scope="module")
def registry_home(tmp_path_factory):
    """A state directory with the tiny model registered as models:/tiny/1 (alias champion)."""
    home = tmp_path_factory.mktemp("batch-home")
    assert register_tiny(home, "tiny", alias="champion") == "1"
    return home


@pytest.fixture()
def settings(registry_home, monkeypatch):
    monkeypatch.setenv("MUSICOPS_HOME", str(registry_home))
    return get_settings()


def _count(settings) -> int:
    db = ProvenanceDB.from_settings(settings)
    try:
        return db.count_assets()
    finally:
        db.close()


def test_example_prompts_become_checked_assets_with_full_provenance(settings) -> None:
    result = run_batch(EXAMPLES / "prompts.jsonl", "models:/tiny@champion", QUIET, settings)
    assert len(result.outcomes) == 7  # 5 lines, two of them with 2 variations
    assert result.plan.model.version == "1" and result.plan.model.pinned_uri == "models:/tiny/1"
    store = open_asset_store(settings)
    for outcome in result.outcomes:
        record = outcome.record
        assert record.passed, record.checks
        for name in REQUIRED_FIELDS:
            assert getattr(record, name) not in (None, "", {}), name
        assert record.model_version == "1" and record.files.keys() == {"wav", "flac"}
        path = store.path_for(record.files["wav"]["sha256"], "wav")
        audio, rate = sf.read(str(path), always_2d=True)
        assert abs(integrated_loudness(audio, rate) - (-14.0)) <= 0.5
        assert true_peak_dbtp(audio, rate) <= -1.0
        assert abs(len(audio) / rate - outcome.item.duration_s) <= 0.05 * outcome.item.duration_s
        tags = read_tags(path)
        assert tags["asset_id"] == record.asset_id and tags["model"] == "models:/tiny/1"
        flac = store.path_for(record.files["flac"]["sha256"], "flac")
        assert read_tags(flac)["asset_id"] == record.asset_id
    assert _count(settings) == 7


@pytest.mark.slow  # PostgreSQL
def test_provenance_in_postgresql_via_database_url(settings, postgres, monkeypatch) -> None:
    """MUSICOPS_DATABASE_URL moves provenance (and so the cache index) to a real PostgreSQL server."""
    url = postgres.create_database()
    monkeypatch.setenv("MUSICOPS_DATABASE_URL", url)
    pg_settings = get_settings()
    assert pg_settings.database_url == url
    sqlite_before = _count(settings)
    first = run_batch(EXAMPLES / "prompts.jsonl", "models:/tiny@champion", QUIET, pg_settings)
    assert first.metrics["n_generated"] == 7 and all(o.record.passed for o in first.outcomes)
    again = run_batch(EXAMPLES / "prompts.jsonl", "models:/tiny@champion", QUIET, pg_settings)
    assert again.metrics["n_cache_hits"] == 7
    assert [o.record.sha256 for o in again.outcomes] == [o.record.sha256 for o in first.outcomes]
    with ProvenanceDB(url) as db:
        assert db.count_assets() == 7
    monkeypatch.delenv("MUSICOPS_DATABASE_URL")
    assert _count(get_settings()) == sqlite_before  # the embedded database was not touched


def test_no_cache_regenerates_bit_identical_audio(settings) -> None:
    before = _count(settings)
    result = run_batch(EXAMPLES / "prompts.jsonl", "models:/tiny@champion",
                       BatchOptions(use_cache=False, log_to_mlflow=False), settings)
    assert result.metrics["n_generated"] == 7
    assert all(o.identical and not o.created for o in result.outcomes)
    assert _count(settings) == before


def test_second_run_is_all_cache_hits_and_never_loads_the_model(settings) -> None:
    before = _count(settings)
    files_before = sorted(p.name for p in settings.assets_dir.rglob("*") if p.is_file())
    # Take the model's weights away: any attempt to load it would now fail.
    shutil.rmtree(settings.model_cache, ignore_errors=True)
    for weights in settings.mlflow_artifacts.rglob("model.safetensors"):
        weights.unlink()
    result = run_batch(EXAMPLES / "prompts.jsonl", "models:/tiny@champion", QUIET, settings)
    assert result.metrics["n_cache_hits"] == 7 and result.metrics["cache_hit_ratio"] == 1.0
    assert all(o.cache_hit for o in result.outcomes)
    assert _count(settings) == before
    assert sorted(p.name for p in settings.assets_dir.rglob("*") if p.is_file()) == files_before


def test_bad_prompt_lines_are_named_and_nothing_is_stored(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    settings = get_settings()
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text("\n".join([
        json.dumps({"prompt": "calm piano", "duration_s": 1}),
        "{oops",
        json.dumps({"prompt": "", "duration_s": 1}),
        json.dumps({"prompt": "x", "duration_s": -2}),
        json.dumps({"prompt": "x", "duration_s": 99999}),
        json.dumps({"prompt": "y" * 10_000, "duration_s": 1}),
        json.dumps({"prompt": "z", "duration_s": 1, "mood": "sad"}),
    ]))
    with pytest.raises(PromptsFileError) as caught:
        run_batch(prompts, "musicgen-tiny", QUIET, settings)
    assert [e.line_no for e in caught.value.errors] == [2, 3, 4, 5, 6, 7]
    assert _count(settings) == 0
    assert not [p for p in settings.assets_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize("reference", ["models:/nope@champion", "models:/tiny/42", "models:/tiny@ghost"])
def test_unknown_models_fail_before_generation(settings, reference) -> None:
    db = ProvenanceDB.from_settings(settings)
    batches_before = len(db.list_assets())
    db.close()
    with pytest.raises(ModelNotFoundError):
        run_batch(EXAMPLES / "prompts.jsonl", reference, QUIET, settings)
    assert _count(settings) == batches_before


def test_sigkill_mid_batch_then_rerun_produces_each_missing_asset_once(tmp_path) -> None:
    home = tmp_path / "home"
    prompts = tmp_path / "many.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"loop number {i} with drums", "duration_s": 2.0, "seed": i})
                                 for i in range(12)))
    env = {**os.environ, "MUSICOPS_HOME": str(home), "MUSICOPS_TORCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "musicops.cli", "generate", "batch", str(prompts),
                             "--batch-size", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    settings = get_settings(home)
    deadline = time.monotonic() + 120
    killed_at = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (home / "provenance.db").exists():
            killed_at = _count(settings)
            if killed_at >= 3:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {r.asset_id: r.created_at for r in ProvenanceDB.from_settings(settings).list_assets()}
    assert 3 <= len(done_before) < 12, "the kill must land mid-batch"

    result = run_batch(prompts, "musicgen-tiny", QUIET, settings)
    hits = [o for o in result.outcomes if o.cache_hit]
    made = [o for o in result.outcomes if not o.cache_hit]
    assert {o.record.asset_id for o in hits} == set(done_before)
    assert len(made) == 12 - len(done_before) and all(o.created for o in made)
    after = {r.asset_id: r.created_at for r in ProvenanceDB.from_settings(settings).list_assets()}
    assert len(after) == 12
    assert all(after[a] == t for a, t in done_before.items()), "completed assets are kept untouched"
    assert not list(settings.assets_dir.rglob(f"{TEMP_PREFIX}*")), "no partial files remain"
    store = open_asset_store(settings)
    for outcome in result.outcomes:
        assert store.verify(outcome.record.sha256, "wav")


def test_cli_prompts_use_the_same_machinery(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["models", "generate", "-p", "calm piano", "-p", "sad cello",
                                      "--duration", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "noise-like" in result.output
    files = sorted(out.glob("*.wav"))
    assert len(files) == 2
    for path in files:
        data, rate = sf.read(str(path))
        assert rate == 32000 and abs(len(data) - 32000) <= 1600
        assert np.isfinite(data).all()
    assert _count(get_settings()) == 2


_STORE_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MUSICOPS_DATABASE_URL", "MUSICOPS_ASSET_STORE")


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _STORE_VARS}
    env.update({"MUSICOPS_HOME": str(home), "MUSICOPS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "musicops.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def test_spellings_of_one_prompt_are_one_asset_that_no_cache_reproduces(tmp_path) -> None:
    """Two lines that differ only in case and spacing share a cache key, and the model is fed the
    normalised prompt the key hashes: one asset, and `--no-cache` regenerates its exact bytes.
    (Feeding the raw text made the second spelling's audio differ from the stored asset.)"""
    home = tmp_path / "home"
    prompts = tmp_path / "spellings.jsonl"
    prompts.write_text(json.dumps({"prompt": "Calm  Piano with RAIN", "duration_s": 1.0, "seed": 3, "tags": ["a"]})
                       + "\n" + json.dumps({"prompt": "calm piano\twith rain ", "duration_s": 1.0, "seed": 3}) + "\n")
    first = _cli(home, "generate", "batch", str(prompts), "--model", "musicgen-tiny")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "differ from the stored ones" not in first.stdout + first.stderr
    settings = get_settings(home)
    with ProvenanceDB.from_settings(settings) as db:
        (record,) = db.list_assets()
    assert record.normalized_prompt == "calm piano with rain" and record.prompt == "Calm  Piano with RAIN"
    store = open_asset_store(settings)
    files = {fmt: f["sha256"] for fmt, f in record.files.items()}
    assert read_tags(store.path_for(files["flac"], "flac"))["title"] == "calm piano with rain"

    again = _cli(home, "generate", "batch", str(prompts), "--model", "musicgen-tiny", "--no-cache")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 generated" in again.stdout and "differ from the stored ones" not in again.stdout + again.stderr
    with ProvenanceDB.from_settings(settings) as db:
        (after,) = db.list_assets()
    assert after.asset_id == record.asset_id and after.sha256 == record.sha256
    # The regenerated bytes themselves, not only the report: clear the store and regenerate.
    for path in settings.assets_dir.rglob("*"):
        if path.is_file():
            path.unlink()
    third = _cli(home, "generate", "batch", str(prompts), "--model", "musicgen-tiny")
    assert third.returncode == 0, third.stdout + third.stderr
    assert all(store.verify(sha, fmt) for fmt, sha in files.items())  # same sha256 as stored at first


def test_too_short_durations_are_refused_by_the_cli_naming_the_minimum(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["models", "generate", "-p", "calm piano", "--duration", "0.1"])
    assert result.exit_code == 2 and "at least 0.5 s" in result.output
    prompts = tmp_path / "short.jsonl"
    prompts.write_text(json.dumps({"prompt": "calm piano", "duration_s": 0.1}) + "\n")
    result = CliRunner().invoke(app, ["generate", "batch", str(prompts)])
    assert result.exit_code == 2 and "line 1: duration_s must be in [0.5, 60]" in result.output
    assert not (tmp_path / "home" / "provenance.db").exists() or _count(get_settings(tmp_path / "home")) == 0
