"""The app in-process (TestClient) on the musicgen-tiny preset: the thread finisher, --no-auth,
readiness before the model is loaded, and a model that fails to load."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from musicops.config import get_settings
from musicops.serving.app import create_app
from musicops.serving.config import ServeConfig


def _wait_ready(client: TestClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_preset_no_auth_thread_finisher(state_home) -> None:
    config = ServeConfig(model="musicgen-tiny", require_keys=False, finish_processes=0, max_duration_s=1)
    with TestClient(create_app(config, get_settings(state_home))) as client:
        _wait_ready(client)
        r = client.post("/v1/generate", json={"prompt": "in process", "duration_s": 0.5, "n_variations": 2})
        assert r.status_code == 200, r.text
        assets = r.json()["assets"]
        assert len(assets) == 2 and all(a["passed"] for a in assets)
        assert r.json()["model"]["uri"] == "musicgen-tiny"
        assert client.get(assets[0]["audio_url"].replace("http://testserver", "")).status_code == 200
        record = client.get(f"/v1/audit/{assets[0]['asset_id']}").json()["asset"]
        assert record["user"] == "key:anonymous"
        assert client.post("/v1/generate", json={"prompt": "x", "duration_s": 1.5}).status_code == 422


def test_unknown_model_is_not_ready_and_refuses_work(state_home) -> None:
    config = ServeConfig(model=str(state_home / "no-such-dir"), require_keys=False, finish_processes=0,
                         poll_interval_s=60)
    with TestClient(create_app(config, get_settings(state_home))) as client:
        time.sleep(0.3)
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        refused = client.post("/v1/generate", json={"prompt": "x", "duration_s": 0.5})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert "unknown model reference" in client.get("/v1/models").json()["last_error"]
