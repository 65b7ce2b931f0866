"""S3 settings: which variable wins, secrets kept out of reprs, copies keep them, the MLflow location."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicops.config import Settings, get_settings
from musicops.store.assets import open_asset_store
from musicops.store.s3 import S3AssetStore

S3_VARS = ("MUSICOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL",
           "MUSICOPS_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_SESSION_TOKEN", "MUSICOPS_ASSET_STORE")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in S3_VARS:
        monkeypatch.delenv(name, raising=False)


def test_endpoint_and_region_fall_back_to_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://mlflow-s3:9000")
    assert get_settings().s3_endpoint_url == "http://mlflow-s3:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws:9000")
    assert get_settings().s3_endpoint_url == "http://aws:9000"
    monkeypatch.setenv("MUSICOPS_S3_ENDPOINT_URL", "http://ours:9000")
    assert get_settings().s3_endpoint_url == "http://ours:9000"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert get_settings().s3_region == "eu-west-1"
    monkeypatch.setenv("MUSICOPS_S3_REGION", "auto")
    assert get_settings().s3_region == "auto"


def test_credentials_are_secrets_and_survive_replace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASECRETID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    monkeypatch.setenv("MUSICOPS_ASSET_STORE", "s3://bucket/team/assets")
    settings = get_settings()
    assert "very-secret-key" not in repr(settings) and "AKIASECRETID" not in repr(settings)
    moved = settings.replace(home=tmp_path / "elsewhere")
    assert moved.s3_secret_access_key is not None
    assert moved.s3_secret_access_key.get_secret_value() == "very-secret-key"
    store = open_asset_store(moved)
    assert isinstance(store, S3AssetStore) and (store.bucket, store.prefix) == ("bucket", "team/assets")
    assert "very-secret-key" not in repr(store)
    assert moved.mlflow_artifacts_uri == "s3://bucket/team/assets/mlflow"
    assert Settings.from_values(home=tmp_path).mlflow_artifacts_uri is None


def test_a_store_elsewhere_leaves_the_local_asset_folder_uncreated(tmp_path: Path) -> None:
    settings = Settings.from_values(home=tmp_path / "home", asset_store_url="s3://bucket/p").ensure()
    assert settings.home.is_dir() and not settings.assets_dir.exists()
    assert Settings.from_values(home=tmp_path / "other").ensure().assets_dir.is_dir()
