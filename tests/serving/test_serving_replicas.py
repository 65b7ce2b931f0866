"""Two `musicops serve` replicas share one PostgreSQL job queue, key store (rates, quotas) and
provenance database.

SIGKILL one of them mid-queue: the other takes over its jobs once their lease runs out, and every
job completes exactly once with exactly one provenance row.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from musicops.serving.keys import KeyStore
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # two musicops serve processes and PostgreSQL

N_JOBS = 16


def _job_rows(url: str) -> list[tuple[str, str, str | None, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text("SELECT job_id, state, owner, completions FROM jobs"))]
    finally:
        engine.dispose()


def _succeeded(url: str) -> int:
    return sum(1 for _, state, _, _ in _job_rows(url) if state == "succeeded")


def test_replicas_share_the_queue_and_survive_one_being_killed(serve_home, server_process, postgres,
                                                               tmp_path) -> None:
    serving_url, provenance_url = postgres.create_database(), postgres.create_database()
    home = tmp_path / "replicas"  # shared state dir: assets, URL-signing secret; registry from serve_home
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{serve_home / 'mlflow.db'}", "MUSICOPS_SERVING_DATABASE_URL": serving_url,
           "MUSICOPS_DATABASE_URL": provenance_url, "MUSICOPS_JOB_LEASE_S": "2"}
    args = ["--model", "models:/tiny/1", "--max-batch-size", "1", "--job-concurrency", "1", "--max-duration", "2",
            "--poll-interval", "0"]
    keys = KeyStore(serving_url)
    headers = {"Authorization": f"Bearer {keys.create('replicas')[1]}"}
    slow = {"Authorization": f"Bearer {keys.create('slow', rate='2/min')[1]}"}
    keys.close()

    first = server_process(home, args, env).start()
    second = server_process(home, args, env).start()
    first_id, second_id = (f"{_hostname()}:{proc.port}" for proc in (first, second))
    try:
        # one key's rate (2 a minute) holds across the replicas: the third request is refused
        codes = [httpx.get(f"{proc.url}/v1/jobs/j_{'0' * 32}", headers=slow, timeout=60).status_code for proc in (first, second, first)]
        assert codes == [404, 404, 429], codes
        job_ids = []
        for i in range(N_JOBS):  # every job goes in through the first replica; both run them
            r = httpx.post(f"{first.url}/v1/jobs", headers=headers,
                           json={"prompt": f"replica job {i}", "duration_s": 1.0, "seed": i}, timeout=60)
            assert r.status_code == 202, r.text
            job_ids.append(r.json()["job_id"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill the first replica while it is running a job
            rows = _job_rows(serving_url)
            if sum(s == "succeeded" for _, s, _, _ in rows) >= 4 and any(
                    s == "running" and owner == first_id for _, s, owner, _ in rows):
                break
            time.sleep(0.02)
        first.kill()  # SIGKILL: its running job keeps a lease nobody renews
        at_kill = {job_id: (state, owner) for job_id, state, owner, _ in _job_rows(serving_url)}
        assert sum(state == "succeeded" for state, _ in at_kill.values()) < N_JOBS, "kill must land mid-queue"

        deadline = time.monotonic() + 120
        while _succeeded(serving_url) < N_JOBS and time.monotonic() < deadline:
            time.sleep(0.2)
        jobs = [httpx.get(f"{second.url}/v1/jobs/{j}", headers=headers, timeout=60).json() for j in job_ids]
    finally:
        first.kill()
        second.stop()

    rows = _job_rows(serving_url)
    assert len(rows) == N_JOBS and all(state == "succeeded" and done == 1 for _, state, _, done in rows), rows
    assert {owner for _, _, owner, _ in rows} == {first_id, second_id}, "both replicas ran jobs from the queue"
    assert all(j["state"] == "succeeded" and len(j["result"]["assets"]) == 1 for j in jobs)
    with ProvenanceDB(provenance_url) as db:
        records = db.list_assets()
    assert len(records) == N_JOBS, "one provenance row per job: none lost, none made twice"
    assert sorted(r.batch_id for r in records) == sorted(job_ids)
    killed_running = [j for j, (state, owner) in at_kill.items() if state == "running" and owner == first_id]
    assert killed_running, f"the first replica was killed while running a job: {at_kill}"
    for job_id in killed_running:  # the dead replica's job was finished by the other one
        assert next(owner for j, _, owner, _ in rows if j == job_id) == second_id
    assert "requeued" in second.log()


def _hostname() -> str:
    import socket

    return socket.gethostname()
