"""End to end against a real `musicops serve` process: sync, async + webhook, stream, assets, audit,
metrics, health, auth and limits (nothing generated or stored on a refusal), request ids, no secrets
in logs, and the batch pipeline's cache answering the API's assets."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from musicops.config import get_settings
from musicops.store.provenance import ProvenanceDB


def _db(home: Path) -> ProvenanceDB:
    return ProvenanceDB.from_settings(get_settings(home))


def _stored(home: Path) -> tuple[int, int]:
    db = _db(home)
    try:
        rows = db.count_assets()
    finally:
        db.close()
    files = sum(1 for p in (home / "assets").rglob("*") if p.is_file())
    return rows, files


@pytest.mark.slow  # the musicops serve process
def test_health_ready_openapi(server, client) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=60).json() == {"status": "ok", "model": None}
    ready = httpx.get(f"{server.url}/readyz", timeout=60).json()
    assert ready == {"status": "ready", "model": "models:/tiny/1"}
    spec = httpx.get(f"{server.url}/openapi.json", timeout=60).json()
    for path in ("/v1/generate", "/v1/generate/stream", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/assets/{asset_id}",
                 "/v1/audit/{asset_id}", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    body = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    def limit(field: dict, name: str) -> object:  # optional fields (a preset may give them) are anyOf [T, null]
        return next(option[name] for option in field.get("anyOf", [field]) if name in option)

    assert limit(body["duration_s"], "maximum") == 2 and limit(body["prompt"], "maxLength") == 1000
    assert "/v1/jobs/batch" in spec["paths"]
    models = client.get("/v1/models").json()
    assert models["model"]["version"] == "1" and models["alias"] == "champion" and models["ready"]


@pytest.mark.slow  # the musicops serve process
def test_sync_generate_is_the_batch_pipeline(server, client, serve_home, tmp_path) -> None:
    request = {"prompt": "Calm  piano with soft strings", "duration_s": 0.5, "seed": 11}
    first = client.post("/v1/generate", json=request)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["model"] == {"name": "tiny", "version": "1", "uri": "models:/tiny/1"}
    (asset,) = data["assets"]
    assert asset["passed"] and not asset["cache_hit"] and asset["seed"] == 11
    audio = httpx.get(asset["audio_url"], timeout=60)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert hashlib.sha256(audio.content).hexdigest() == asset["sha256"]
    samples, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 32000 and len(samples) == 16000 and np.isfinite(samples).all()
    flac = httpx.get(asset["urls"]["flac"], timeout=60)
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"

    # Same request (differently spelt prompt): a cache hit, same asset, nothing new stored.
    before = _stored(serve_home)
    again = client.post("/v1/generate", json={**request, "prompt": "calm piano with soft strings"}).json()
    assert again["assets"][0]["asset_id"] == asset["asset_id"] and again["assets"][0]["cache_hit"]
    assert _stored(serve_home) == before

    # The batch pipeline with the same line, planned for the key's tenant ("main": each tenant has its
    # own cache), hits the API's asset: same keys, assets and provenance.
    from musicops.generation.batch import run_batch
    from musicops.generation.planning import BatchOptions

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": request["prompt"], "duration_s": 0.5, "seed": 11}) + "\n")
    result = run_batch(prompts, "models:/tiny@champion", BatchOptions(log_to_mlflow=False, tenant="main"),
                       get_settings(serve_home))
    assert [o.record.asset_id for o in result.outcomes] == [asset["asset_id"]]
    assert result.outcomes[0].cache_hit
    record = result.outcomes[0].record
    assert record.user == "key:main" and record.model_version == "1" and record.batch_id.startswith("api-")


@pytest.mark.slow  # the musicops serve process
def test_variations_and_dynamic_batching(server, client) -> None:
    def metric(name: str) -> float:
        text = httpx.get(f"{server.url}/metrics", timeout=60).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    calls_before = metric("musicops_batch_size_count")
    results: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def one(i: int) -> None:
        barrier.wait()
        results.append(client.post("/v1/generate", json={"prompt": f"batched groove {i}", "duration_s": 0.5}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 8
    assert len({r.json()["assets"][0]["asset_id"] for r in results}) == 8
    calls = metric("musicops_batch_size_count") - calls_before
    assert calls < 8, f"8 concurrent compatible requests took {calls} model calls: no batching"

    two = client.post("/v1/generate", json={"prompt": "two takes", "duration_s": 0.5, "n_variations": 2, "seed": 5})
    assert [a["seed"] for a in two.json()["assets"]] == [5, 6]


@pytest.mark.slow  # the musicops serve process
def test_async_job_with_webhook(server, client, keys) -> None:
    received: list[tuple[dict, dict]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((json.loads(body), dict(self.headers)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_port}/done"
        created = client.post("/v1/jobs", json={"prompt": "async ambient pad", "duration_s": 0.5, "n_variations": 2,
                                                "webhook_url": url})
        assert created.status_code == 202, created.text
        job = created.json()
        assert job["state"] in ("queued", "running", "succeeded") and job["progress"]["total"] == 2
        deadline = time.monotonic() + 30
        while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = client.get(f"/v1/jobs/{job['job_id']}").json()
        assert job["state"] == "succeeded", job
        assert job["progress"] == {"done": 2, "total": 2, "fraction": 1.0}
        assert len(job["result"]["assets"]) == 2 and all(a["audio_url"] for a in job["result"]["assets"])
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(received) == 1, "one webhook call per completed job"
        payload, headers = received[0]
        assert payload["job_id"] == job["job_id"] and payload["state"] == "succeeded"
        assert headers["X-Musicops-Signature"].startswith("sha256=")
        # Another key cannot see the job; hosts outside the allow-list are refused.
        other = httpx.get(f"{server.url}/v1/jobs/{job['job_id']}", headers={"X-API-Key": keys.other}, timeout=60)
        assert other.status_code == 404
        refused = client.post("/v1/jobs", json={"prompt": "x", "duration_s": 0.5,
                                                "webhook_url": "http://example.com/hook"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "webhook_not_allowed"
    finally:
        hook.shutdown()


@pytest.mark.slow  # the musicops serve process
def test_stream(server, client, serve_home) -> None:
    chunks = []
    with client.stream("POST", "/v1/generate/stream", json={"prompt": "streamed synth lead", "duration_s": 2.0}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert r.headers.get("transfer-encoding") == "chunked"
        asset_id = r.headers["x-asset-id"]
        chunks = list(r.iter_raw())
    data = b"".join(chunks)
    assert data[:4] == b"RIFF" and len(chunks) >= 2
    samples, rate = sf.read(io.BytesIO(data))
    assert rate == 32000 and len(samples) == 64000
    db = _db(serve_home)
    try:
        assert hashlib.sha256(data).hexdigest() == db.get_asset(asset_id).sha256
    finally:
        db.close()
    too_many = client.post("/v1/generate/stream", json={"prompt": "x", "duration_s": 0.5, "n_variations": 2})
    assert too_many.status_code == 422


@pytest.mark.slow  # the musicops serve process
def test_audit(server, client, serve_home) -> None:
    asset = client.post("/v1/generate", json={"prompt": "audited cello", "duration_s": 0.5}).json()["assets"][0]
    db = _db(serve_home)
    try:
        db.record_gate(asset["asset_id"], "copyright", True, {"matches": []})
    finally:
        db.close()
    audit = client.get(f"/v1/audit/{asset['asset_id']}")
    assert audit.status_code == 200
    body = audit.json()
    record = body["asset"]
    assert record["prompt"] == "audited cello" and record["model_version"] == "1" and record["user"] == "key:main"
    assert record["sha256"] == asset["sha256"] and record["code_version"] and record["checks"]
    assert [g["gate"] for g in body["gates"]] == ["copyright"] and body["gates"][0]["passed"]
    assert httpx.get(body["urls"]["wav"], timeout=60).status_code == 200
    assert client.get("/v1/audit/a_000000000000000000000000").status_code == 404
    assert httpx.get(f"{server.url}/v1/audit/{asset['asset_id']}", timeout=60).status_code == 401


@pytest.mark.slow  # the musicops serve process
def test_metrics(server, client) -> None:
    client.post("/v1/generate", json={"prompt": "metered", "duration_s": 0.5})
    client.post("/v1/generate", json={"prompt": "metered", "duration_s": 0.5})
    text = httpx.get(f"{server.url}/metrics", timeout=60).text
    assert 'musicops_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/generate",status="200"}' in text
    for name in ("musicops_queue_depth{queue=\"model\"}", "musicops_queue_depth{queue=\"jobs\"}",
                 "musicops_cache_hit_ratio", "musicops_cache_lookups_total{result=\"hit\"}",
                 "musicops_generation_seconds_bucket", "musicops_errors_total{cause=\"unauthenticated\"}",
                 "musicops_model_info{name=\"tiny\",uri=\"models:/tiny/1\",version=\"1\"} 1.0"):
        assert name in text, name


@pytest.mark.slow  # the musicops serve process
def test_refusals_generate_and_store_nothing(server, client, keys, serve_home) -> None:
    from musicops.serving.signing import UrlSigner

    ok = client.post("/v1/generate", json={"prompt": "signed thing", "duration_s": 0.5}).json()["assets"][0]
    before = _stored(serve_home)
    generate = f"{server.url}/v1/generate"
    body = {"prompt": "refused request", "duration_s": 0.5}

    missing = httpx.post(generate, json=body, timeout=60)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.post(generate, json=body, headers={"Authorization": f"Bearer {keys.main[:-4]}AAAA"}, timeout=60)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"

    long_prompt = client.post("/v1/generate", json={"prompt": "p" * 1001, "duration_s": 0.5})
    assert long_prompt.status_code == 422
    assert "prompt" in long_prompt.json()["error"]["message"] and "1000" in long_prompt.json()["error"]["message"]
    negative = client.post("/v1/generate", json={"prompt": "x", "duration_s": -1})
    assert negative.status_code == 422 and "duration_s" in negative.json()["error"]["message"]
    control = client.post("/v1/generate", json={"prompt": "bad\x01prompt", "duration_s": 0.5})
    assert control.status_code == 422 and "control characters" in control.json()["error"]["message"]
    unknown = client.post("/v1/generate", json={**body, "mood": "sad"})
    assert unknown.status_code == 422 and "mood" in unknown.json()["error"]["message"]

    quota = {"Authorization": f"Bearer {keys.tiny_quota}"}
    over = httpx.post(generate, json={"prompt": "quota", "duration_s": 1.0}, headers=quota, timeout=60)
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
    assert int(over.headers["Retry-After"]) > 0

    slow = {"Authorization": f"Bearer {keys.slow}"}
    codes = [httpx.get(f"{server.url}/v1/models", headers=slow, timeout=60).status_code for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429
    limited = httpx.get(f"{server.url}/v1/models", headers=slow, timeout=60)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1

    url = ok["audio_url"]
    tampered = url.replace("fmt=wav", "fmt=flac")
    assert httpx.get(tampered, timeout=60).status_code == 403
    sig_end = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert httpx.get(sig_end, timeout=60).status_code == 403
    assert httpx.get(url.split("?")[0], timeout=60).status_code == 403
    signer = UrlSigner((serve_home / "serve" / "secret").read_bytes().strip(), ttl_s=60)
    query, _ = signer.sign(ok["asset_id"], "wav", now=time.time() - 3600)
    expired = httpx.get(f"{server.url}/v1/assets/{ok['asset_id']}?{query}", timeout=60)
    assert expired.status_code == 403 and "expired" in expired.json()["error"]["message"]
    other_asset = url.replace(ok["asset_id"], "a_" + "0" * 24)
    assert httpx.get(other_asset, timeout=60).status_code == 403

    assert _stored(serve_home) == before, "refused requests must not generate or store anything"


@pytest.mark.slow  # the musicops serve process
def test_request_ids_and_no_secrets_in_logs(server, client, keys, serve_home) -> None:
    response = client.post("/v1/generate", json={"prompt": "traced", "duration_s": 0.5},
                           headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["x-request-id"] == "trace-abc-123"
    assert response.json()["request_id"] == "trace-abc-123"
    assert len(httpx.get(f"{server.url}/healthz", timeout=60).headers["x-request-id"]) == 32
    url = response.json()["assets"][0]["audio_url"]
    httpx.get(url, timeout=60)
    time.sleep(0.2)
    log = server.log()
    assert "trace-abc-123" in log and "POST /v1/generate 200" in log
    secret = (serve_home / "serve" / "secret").read_text().strip()
    sig = url.split("sig=")[1]
    for value in (keys.main, keys.main.split("_")[-1], keys.other, secret, sig):
        assert value not in log
    assert oct((serve_home / "serve" / "secret").stat().st_mode & 0o777) == "0o600"


def test_keys_cli(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "ci", "--quota-minutes", "5", "--rate", "30/min"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("mko_")
    listed = runner.invoke(app, ["keys", "list"])
    assert "ci" in listed.output and key not in listed.output and "30" in listed.output
    secret = key.split("_", 2)[2]  # the secret itself may contain "_" (urlsafe base64)
    assert len(secret) >= 20
    assert secret.encode() not in (tmp_path / "home" / "serve" / "keys.db").read_bytes()
    assert runner.invoke(app, ["keys", "create", "--name", "ci"]).exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", "ci"]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "ci"]).exit_code == 2
