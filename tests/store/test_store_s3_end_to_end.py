"""MUSICOPS_ASSET_STORE=s3://bucket/prefix end to end against moto's S3 server on 127.0.0.1: a batch
killed midway and rerun stores each asset once in the bucket and nothing locally; MLflow artifacts of
a registered version land in the same bucket and load back by models:/NAME/VERSION; a real `musicops
serve` loads that version, delivers its clips by presigned URL, links them from the audit endpoint and
keeps other tenants out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.registry import register_tiny
from helpers.s3server import S3Server
from helpers.servers import STORE_VARS, musicops_serve

from musicops.config import get_settings
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # moto server, batch subprocesses, a musicops serve process


@pytest.fixture(autouse=True)
def _mlflow_environment() -> Iterator[None]:
    """`configure_mlflow` exports MLflow's S3 variables into this process: put them back afterwards."""
    names = ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE", "AWS_DEFAULT_REGION",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _use_s3(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server, url: str) -> None:
    """This test's environment points at the bucket (monkeypatch restores it afterwards)."""
    for name in STORE_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env(url).items():
        monkeypatch.setenv(name, value)


def _content_addressed(objects: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    """The asset objects under `prefix`, each checked to hash to its own key."""
    assets = {k: v for k, v in objects.items() if k.startswith(f"{prefix}/") and "/mlflow/" not in f"/{k}"}
    for key, data in assets.items():
        sha, _, fmt = key.rsplit("/", 1)[1].partition(".")
        assert hashlib.sha256(data).hexdigest() == sha, key
        assert key == f"{prefix}/{sha[:2]}/{sha[2:4]}/{sha}.{fmt}"
    return assets


def test_batch_killed_midway_then_rerun_stores_each_asset_once_in_the_bucket(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.new_bucket()
    home = tmp_path / "home"
    _use_s3(monkeypatch, s3_server, f"s3://{bucket}/assets")
    monkeypatch.setenv("MUSICOPS_HOME", str(home))
    settings = get_settings()
    prompts = tmp_path / "many.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"s3 loop {i} with drums", "duration_s": 1.0, "seed": i})
                                 for i in range(10)))
    command = [sys.executable, "-m", "musicops.cli", "generate", "batch", str(prompts), "--batch-size", "1"]
    env = {**os.environ, "MUSICOPS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline, done = time.monotonic() + 180, 0
    while time.monotonic() < deadline and proc.poll() is None:
        if settings.provenance_db.exists():
            db = ProvenanceDB.from_settings(settings)
            try:
                done = db.count_assets()
            finally:
                db.close()
            if done >= 3:
                break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    db = ProvenanceDB.from_settings(settings)
    try:
        before = {r.asset_id: r.created_at for r in db.list_assets()}
    finally:
        db.close()
    assert 3 <= len(before) < 10, f"the kill must land mid-batch: {len(before)} done\n{err.decode()[-2000:]}"
    first = _content_addressed(s3_server.objects(bucket), "assets")
    assert first, "the killed run stored objects in the bucket"

    out = tmp_path / "delivered"  # the rerun also copies the passing clips out of the bucket
    rerun = subprocess.run([*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    db = ProvenanceDB.from_settings(settings)
    try:
        records = db.list_assets()
    finally:
        db.close()
    assert len(records) == 10 and len({r.asset_id for r in records}) == 10
    assert all(r.created_at == before[r.asset_id] for r in records if r.asset_id in before), "kept untouched"
    objects = _content_addressed(s3_server.objects(bucket), "assets")
    expected = {f"assets/{f['sha256'][:2]}/{f['sha256'][2:4]}/{f['sha256']}.{fmt}"
                for r in records for fmt, f in r.files.items()}
    assert set(objects) == expected, "each file of each asset once, nothing else"
    assert all(objects[k] == v for k, v in first.items()), "objects of the killed run unchanged"
    assert not settings.assets_dir.exists(), "nothing written to the local asset folder"
    delivered = {hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert delivered and delivered <= {r.files["wav"]["sha256"] for r in records if r.passed}
    assert len(delivered) == len(list(out.iterdir())) == sum(r.passed for r in records)


def test_registry_on_s3_then_serve_delivers_by_presigned_url(s3_server: S3Server, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from musicops.registry import configure_mlflow, download_version
    from musicops.serving.keys import KeyStore

    bucket = s3_server.new_bucket()
    home = tmp_path / "home"
    url = f"s3://{bucket}/team/assets"
    _use_s3(monkeypatch, s3_server, url)
    monkeypatch.setenv("MUSICOPS_HOME", str(home))
    settings = get_settings()
    assert register_tiny(home, "tiny-s3", alias=None, settings=settings) == "1"
    mlflow_objects = [k for k in s3_server.objects(bucket) if k.startswith("team/assets/mlflow/")]
    assert any(k.endswith("/MLmodel") for k in mlflow_objects), mlflow_objects
    assert any(k.endswith("model.safetensors") for k in mlflow_objects), mlflow_objects
    assert not list(settings.mlflow_artifacts.rglob("*.safetensors")), "no weights in the local artifact root"
    configure_mlflow(settings)
    weights = download_version("tiny-s3", "1", settings)  # the registry load, from the bucket
    assert (weights / "config.json").is_file() and any(weights.glob("*.safetensors"))

    shutil.rmtree(settings.model_cache)  # the server downloads the version from the bucket itself
    store = KeyStore.for_settings(settings)
    try:
        acme, globex = store.create("acme-1", tenant="acme")[1], store.create("globex-1", tenant="globex")[1]
    finally:
        store.close()
    assert "MLFLOW_S3_ENDPOINT_URL" not in s3_server.env(url), "the server derives it from the settings"
    serve = musicops_serve(home, ["--model", "models:/tiny-s3/1", "--poll-interval", "0", "--max-duration", "2",
                                  "--url-ttl", "300"], env=s3_server.env(url))
    with serve, httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {acme}"}, timeout=60) as client, \
            httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {globex}"}, timeout=60) as other:
        made = client.post("/v1/generate", json={"prompt": "s3 delivery probe", "duration_s": 0.5, "seed": 3})
        assert made.status_code == 200, made.text
        asset = made.json()["assets"][0]
        assert made.json()["model"]["version"] == "1"
        wav = httpx.get(asset["urls"]["wav"], timeout=30)  # straight from the bucket, no key
        assert asset["urls"]["wav"].startswith(s3_server.endpoint) and wav.status_code == 200
        assert hashlib.sha256(wav.content).hexdigest() == asset["sha256"]

        audit = client.get(f"/v1/audit/{asset['asset_id']}")
        assert audit.status_code == 200, audit.text
        files = audit.json()["asset"]["files"]
        for fmt, link in audit.json()["urls"].items():
            got = httpx.get(link, timeout=30)
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == files[fmt]["sha256"], fmt

        redirect = client.get(f"/v1/assets/{asset['asset_id']}", params={"fmt": "flac"})
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(s3_server.endpoint)
        followed = httpx.get(redirect.headers["location"], timeout=30)
        assert hashlib.sha256(followed.content).hexdigest() == files["flac"]["sha256"]
        keys = {f"team/assets/{f['sha256'][:2]}/{f['sha256'][2:4]}/{f['sha256']}.{fmt}" for fmt, f in files.items()}
        assert keys <= set(s3_server.objects(bucket))

        for path in (f"/v1/audit/{asset['asset_id']}", f"/v1/assets/{asset['asset_id']}"):
            refused = other.get(path)
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found", path
        assert client.get("/readyz").status_code == 200
        # The bucket goes away: readiness takes the replica out of traffic, naming the problem.
        s3 = s3_server.client()
        for key in s3_server.objects(bucket):
            s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_bucket(Bucket=bucket)
        deadline = time.monotonic() + 30
        while (ready := client.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ready.status_code == 503 and "does not exist" in ready.json()["detail"], ready.text

    assert not (home / "assets").exists(), "nothing written to the local asset folder"
