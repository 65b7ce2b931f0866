"""SIGKILL the server with 20 accepted jobs queued; after a restart every job completes exactly once."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from musicops.config import get_settings
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # musicops serve processes


def _states(home) -> dict[str, int]:
    with sqlite3.connect(home / "serve" / "jobs.db", timeout=30) as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())


def test_sigkill_with_20_jobs_then_restart_completes_each_exactly_once(serve_home, server_process,
                                                                       tmp_path) -> None:
    # A state dir of its own (jobs.db, provenance, assets) on the same MLflow registry.
    home = tmp_path / "durable"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{serve_home / 'mlflow.db'}"}
    args = ["--model", "models:/tiny/1", "--max-batch-size", "1", "--job-concurrency", "1", "--max-duration", "2"]
    server = server_process(home, args, env).start()
    from musicops.serving.keys import KeyStore

    store = KeyStore.for_settings(get_settings(home))
    key = store.create("durable")[1]
    store.close()
    headers = {"Authorization": f"Bearer {key}"}
    job_ids = []
    try:
        for i in range(20):
            r = httpx.post(f"{server.url}/v1/jobs", headers=headers,
                           json={"prompt": f"durable job {i}", "duration_s": 1.5, "seed": i}, timeout=60)
            assert r.status_code == 202, r.text
            job_ids.append(r.json()["job_id"])
        deadline = time.monotonic() + 60
        while _states(home).get("succeeded", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.kill()  # SIGKILL: no shutdown hooks run
    at_kill = _states(home)
    assert 1 <= at_kill.get("succeeded", 0) < 20, f"the kill must land mid-queue: {at_kill}"

    server = server_process(home, args, env).start()
    try:
        deadline = time.monotonic() + 90
        while _states(home).get("succeeded", 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        jobs = [httpx.get(f"{server.url}/v1/jobs/{j}", headers=headers, timeout=60).json() for j in job_ids]
    finally:
        server.stop()
    assert _states(home) == {"succeeded": 20}
    assert all(j["state"] == "succeeded" and len(j["result"]["assets"]) == 1 for j in jobs)
    with sqlite3.connect(home / "serve" / "jobs.db") as conn:
        assert conn.execute("SELECT COUNT(*), SUM(completions), MAX(completions) FROM jobs").fetchone() == (20, 20, 1)
    db = ProvenanceDB.from_settings(get_settings(home))
    try:
        records = db.list_assets()
    finally:
        db.close()
    assert len(records) == 20, "one provenance row per job: none lost, none made twice"
    assert sorted(r.batch_id for r in records) == sorted(job_ids)
    assert {a["asset_id"] for j in jobs for a in j["result"]["assets"]} == {r.asset_id for r in records}
    assert "resuming" in server.log() or at_kill.get("running", 0) == 0
