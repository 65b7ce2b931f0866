"""The S3 asset store against a real S3-API server on 127.0.0.1 (moto's standalone server): the same
names, idempotence and checked reads as the local store, presigned delivery, and one-line errors."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers.s3server import S3Server

from musicops.config import Settings
from musicops.store.assets import AssetCorruptError, asset_store_problem, open_asset_store
from musicops.store.s3 import S3AssetStore, S3StoreError

pytestmark = pytest.mark.slow  # a moto server process


def _store(s3_server: S3Server, tmp_path: Path, prefix: str = "clips/v1") -> tuple[S3AssetStore, str]:
    bucket = s3_server.new_bucket()
    settings = Settings.from_values(home=tmp_path / "home", **s3_server.settings_values(f"s3://{bucket}/{prefix}"))
    store = open_asset_store(settings)
    assert isinstance(store, S3AssetStore)
    return store, bucket


def test_put_read_keys_and_idempotent_reput(s3_server: S3Server, tmp_path: Path) -> None:
    store, bucket = _store(s3_server, tmp_path)
    data = b"RIFF....WAVEfmt fake audio"
    sha = hashlib.sha256(data).hexdigest()
    stored = store.put(data, "wav")
    assert (stored.sha256, stored.size, stored.fmt) == (sha, len(data), "wav")
    key = f"clips/v1/{sha[:2]}/{sha[2:4]}/{sha}.wav"
    assert s3_server.objects(bucket) == {key: data}
    assert store.read(sha, "wav") == data and store.verify(sha, "wav")
    assert store.exists(sha, "wav") and not store.exists(sha, "flac")
    first = s3_server.client().head_object(Bucket=bucket, Key=key)["LastModified"]

    assert store.put(data, "wav") == stored  # same bytes: no second PUT
    assert s3_server.client().head_object(Bucket=bucket, Key=key)["LastModified"] == first
    assert s3_server.objects(bucket) == {key: data}
    with store.local_file(sha, "wav") as path:
        assert path.read_bytes() == data and path.suffix == ".wav"
    assert not path.exists(), "the temporary copy is removed"
    assert not (tmp_path / "home" / "assets").exists(), "nothing in the local asset folder"


def test_puts_without_checksum_headers_for_servers_that_reject_them(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    values = {**s3_server.settings_values(f"s3://{bucket}/p"), "s3_checksum": False}
    store = open_asset_store(Settings.from_values(home=tmp_path, **values))
    sent: list[dict[str, str]] = []
    store.client.meta.events.register("before-send.s3.PutObject",
                                      lambda request, **_: sent.append(dict(request.headers)))
    stored = store.put(b"no checksum headers", "wav")
    assert store.read(stored.sha256, "wav") == b"no checksum headers"
    assert sent and not [h for h in sent[0] if h.lower().startswith("x-amz-checksum")], sent[0]
    checked = open_asset_store(Settings.from_values(home=tmp_path, **{**values, "s3_checksum": True}))
    checked.client.meta.events.register("before-send.s3.PutObject",
                                        lambda request, **_: sent.append(dict(request.headers)))
    checked.put(b"with a checksum", "wav")
    assert "x-amz-checksum-sha256" in {h.lower() for h in sent[-1]}


def test_missing_corrupt_and_damaged_objects(s3_server: S3Server, tmp_path: Path) -> None:
    store, bucket = _store(s3_server, tmp_path, prefix="")
    data = b"0123456789"
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError):
        store.read(sha, "wav")
    assert not store.verify(sha, "wav")
    key = f"{sha[:2]}/{sha[2:4]}/{sha}.wav"
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key=key, Body=b"9876543210")  # same size, other bytes: bit rot
    with pytest.raises(AssetCorruptError, match="corrupt"):
        store.read(sha, "wav")
    assert not store.verify(sha, "wav")
    client.put_object(Bucket=bucket, Key=key, Body=b"short")  # a damaged copy of the wrong size
    store.put(data, "wav")  # replaced: we hold the right bytes
    assert store.read(sha, "wav") == data


@pytest.mark.parametrize(("sha", "fmt"), [("../" + "a" * 61, "wav"), ("A" * 64, "wav"), ("a" * 64, "exe"),
                                          ("a" * 64, "wav/../../x")])
def test_bad_names_never_become_keys(s3_server: S3Server, tmp_path: Path, sha: str, fmt: str) -> None:
    store, bucket = _store(s3_server, tmp_path)
    for call in (store.read, store.exists, store.verify, store.key_for):
        with pytest.raises(ValueError):
            call(sha, fmt)
    with pytest.raises(ValueError):
        store.presigned_url(sha, fmt, 60)
    assert s3_server.objects(bucket) == {}


def test_presigned_url_delivers_the_bytes(s3_server: S3Server, tmp_path: Path) -> None:
    store, _ = _store(s3_server, tmp_path)
    data = b"fLaC fake flac bytes"
    stored = store.put(data, "flac")
    url = store.presigned_url(stored.sha256, "flac", 120, filename="a_0123.flac")
    assert url is not None and url.startswith(s3_server.endpoint) and "X-Amz-Signature=" in url
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["content-type"] == "audio/flac"
    assert 'filename="a_0123.flac"' in answer.headers["content-disposition"]


def test_store_pickles_without_its_client(s3_server: S3Server, tmp_path: Path) -> None:
    """Finisher worker processes receive the store: they must open their own client."""
    store, _ = _store(s3_server, tmp_path)
    stored = store.put(b"pickled", "ogg")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read(stored.sha256, "ogg") == b"pickled"
    assert "test" not in repr(store), "no credentials in the repr"


def test_problems_are_one_line_naming_the_cause(s3_server: S3Server, tmp_path: Path) -> None:
    values = s3_server.settings_values("s3://no-such-bucket-here/x")
    problem = asset_store_problem(Settings.from_values(home=tmp_path, **values))
    assert problem is not None and "bucket 'no-such-bucket-here' does not exist" in problem and "\n" not in problem
    bucket = s3_server.new_bucket()
    unreachable = {**s3_server.settings_values(f"s3://{bucket}/x"), "s3_endpoint_url": "http://127.0.0.1:9"}
    problem = asset_store_problem(Settings.from_values(home=tmp_path, **unreachable))
    assert problem is not None and "cannot reach the S3 endpoint" in problem and "127.0.0.1:9" in problem
    store = open_asset_store(Settings.from_values(home=tmp_path, **unreachable))
    with pytest.raises(S3StoreError, match="cannot reach"):
        store.put(b"x", "wav")
    assert asset_store_problem(Settings.from_values(home=tmp_path, **s3_server.settings_values(f"s3://{bucket}/x"))) is None
    assert s3_server.objects(bucket) == {}, "the readiness probe object is removed"


def test_refused_credentials_are_one_line_without_the_secret(tmp_path: Path) -> None:
    server = S3Server(tmp_path / "auth").start(free_actions=1)  # the bucket is made, then keys are checked
    try:
        bucket = server.new_bucket()
        values = {**server.settings_values(f"s3://{bucket}/x"), "s3_secret_access_key": "wrong-secret-value"}
        problem = asset_store_problem(Settings.from_values(home=tmp_path, **values))
        assert problem is not None and "credentials were refused" in problem and "\n" not in problem
        assert "wrong-secret-value" not in problem and bucket in problem
        with pytest.raises(S3StoreError, match="credentials were refused") as raised:
            open_asset_store(Settings.from_values(home=tmp_path, **values)).put(b"x", "wav")
        assert "wrong-secret-value" not in str(raised.value)
    finally:
        server.stop()


def test_serve_refuses_to_start_on_a_missing_bucket_in_one_line(s3_server: S3Server, tmp_path: Path) -> None:
    import os

    from helpers.servers import STORE_VARS

    env = {k: v for k, v in os.environ.items() if k not in STORE_VARS}
    env.update(s3_server.env("s3://no-such-bucket-here/assets"), MUSICOPS_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "musicops.cli", "serve", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "bucket 'no-such-bucket-here' does not exist" in done.stderr and "Traceback" not in done.stderr
    assert "test" not in done.stderr.replace("no-such", ""), "no credentials in the message"
