"""Fast unit tests of the serving building blocks (no server, no model)."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from musicops.config import get_settings
from musicops.serving.jobs import JobStore, host_allowed
from musicops.serving.keys import KeyStore, RateLimiter, parse_rate
from musicops.serving.signing import UrlSigner, serve_secret

SECRET_ENV = "MUSICOPS_SERVE_SECRET"


def test_signed_urls() -> None:
    signer = UrlSigner(b"k" * 48, ttl_s=60)
    query, exp = signer.sign("a_" + "1" * 24, "wav", now=1000)
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert params["fmt"] == "wav" and int(params["exp"]) == exp == 1060
    assert signer.verify("a_" + "1" * 24, "wav", exp, params["sig"], now=1059) is None
    assert "expired" in signer.verify("a_" + "1" * 24, "wav", exp, params["sig"], now=1061)
    assert signer.verify("a_" + "1" * 24, "flac", exp, params["sig"], now=1000) == "invalid signature"
    assert signer.verify("a_" + "2" * 24, "wav", exp, params["sig"], now=1000) == "invalid signature"
    assert signer.verify("a_" + "1" * 24, "wav", exp + 1, params["sig"], now=1000) == "invalid signature"
    assert "missing" in signer.verify("a_" + "1" * 24, "wav", None, None)
    assert UrlSigner(b"x" * 48).signature("a", "wav", 1) != signer.signature("a", "wav", 1)


def test_secret_file_is_generated_0600_and_env_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    first = serve_secret(tmp_path / "serve", get_settings(tmp_path))
    assert len(first) >= 48 and serve_secret(tmp_path / "serve", get_settings(tmp_path)) == first
    assert stat.S_IMODE(os.stat(tmp_path / "serve" / "secret").st_mode) == 0o600
    monkeypatch.setenv(SECRET_ENV, "e" * 40)
    assert serve_secret(tmp_path / "serve", get_settings(tmp_path)) == b"e" * 40


def test_keys_hashed_verified_revoked(tmp_path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, plain = store.create("alice", quota_minutes=1, rate="30/min")
    assert store.verify(plain) == key and key.rate_per_min == 30
    assert store.verify(plain[:-1] + ("A" if plain[-1] != "A" else "B")) is None
    assert store.verify("mko_nothex_" + "a" * 40) is None and store.verify(None) is None
    assert plain.split("_", 2)[2].encode() not in (tmp_path / "keys.db").read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        store.create("alice")
    assert store.revoke("alice") and store.verify(plain) is None
    store.close()


def test_quota_reservation_is_atomic(tmp_path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("q", quota_minutes=1)  # 60 s a day
    granted = []
    barrier = threading.Barrier(8)

    def reserve() -> None:
        barrier.wait()
        granted.append(store.reserve(key, 10.0, day="2030-01-01")[0])

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 6 and store.used_seconds(key.key_id, "2030-01-01") == 60
    store.refund(key, 10.0, day="2030-01-01")
    assert store.reserve(key, 10.0, day="2030-01-01") == (True, 60.0)
    store.close()


def test_rates_and_token_bucket() -> None:
    assert parse_rate("30/min") == 30 and parse_rate("2/s") == 120 and parse_rate("60/h") == 1
    assert parse_rate("10") == 10 and parse_rate(None) is None
    with pytest.raises(ValueError):
        parse_rate("fast")
    from musicops.serving.keys import ApiKey

    key = ApiKey("k" * 12, "k", None, 2.0, None)  # 2 a minute, burst 2
    limiter = RateLimiter()
    assert limiter.acquire(key, now=0) == 0 and limiter.acquire(key, now=0) == 0
    assert limiter.acquire(key, now=0) == pytest.approx(30.0)
    assert limiter.acquire(key, now=30.0) == 0


def test_webhook_allow_list() -> None:
    assert not host_allowed("http://127.0.0.1:9/x", ())
    assert host_allowed("http://127.0.0.1:9/x", ("127.0.0.1",))
    assert host_allowed("https://hooks.example.com/x", ("hooks.example.com:443", "hooks.example.com"))
    assert not host_allowed("https://hooks.example.com.evil.io/x", ("hooks.example.com",))
    assert not host_allowed("http://user:pw@127.0.0.1/x", ("127.0.0.1",))
    assert not host_allowed("file:///etc/passwd", ("127.0.0.1",))
    assert not host_allowed("http://127.0.0.1:99999999/x", ("127.0.0.1",))


def test_job_state_machine_completes_once(database_url: str) -> None:
    store = JobStore(database_url, replica="r1")
    job = store.add("k" * 12, "key:k", {"prompt": "x"}, total=1, reserved_seconds=1.0, webhook_url=None)
    assert store.claim(5)[0].job_id == job.job_id and store.claim(5) == []
    assert store.recover() == 0  # the lease is alive
    assert store.recover(at_start=True) == 1  # the same replica restarted after a crash
    (again,) = store.claim(5)
    assert again.attempts == 2
    assert store.complete(job.job_id, {"asset_ids": []}) is True
    assert store.complete(job.job_id, {"asset_ids": []}) is False
    final = store.get(job.job_id)
    assert final.state == "succeeded" and final.completions == 1 and final.done == 1
    store.close()


def test_eta_counts_the_audio_seconds_queued_ahead(database_url: str) -> None:
    """ETAs are audio seconds ahead x the loaded model's measured seconds per audio second: queued
    jobs created earlier count pro rata of their clips not yet done; later and running jobs do not."""
    store = JobStore(database_url, replica="r1")
    first = store.add("k" * 12, "key:k", {"prompt": "a"}, total=4, reserved_seconds=40.0, webhook_url=None)
    second = store.add("k" * 12, "key:k", {"prompt": "b"}, total=1, reserved_seconds=30.0, webhook_url=None)
    third = store.add("k" * 12, "key:k", {"prompt": "c"}, total=2, reserved_seconds=8.0, webhook_url=None)
    assert store.audio_seconds_ahead(first) == 0.0
    assert store.audio_seconds_ahead(third) == pytest.approx(70.0)
    assert store.claim(1)[0].job_id == first.job_id  # running now: no longer "ahead" in the queue
    assert store.audio_seconds_ahead(third) == pytest.approx(30.0)
    assert store.audio_seconds_ahead(second) == 0.0
    store.close()


def test_the_loaded_model_is_timed_once_at_load() -> None:
    from musicops.models.musicgen import TransformersMusicGen
    from musicops.serving.model_manager import measure_speed

    rate = measure_speed(TransformersMusicGen.from_preset())
    assert 0 < rate < 600  # compute seconds per audio second, measured on a 0.5 s clip


def _add_jobs(store: JobStore, n: int) -> list[str]:
    return [store.add("k" * 12, "key:k", {"prompt": f"p{i}"}, total=1, reserved_seconds=1.0,
                      webhook_url=None).job_id for i in range(n)]


def test_two_replicas_claim_each_job_exactly_once(database_url: str) -> None:
    """Replicas sharing one queue (PostgreSQL in production) race for 40 jobs: no job is claimed twice."""
    import threading

    stores = [JobStore(database_url, replica=f"replica-{i}") for i in range(2)]
    ids = _add_jobs(stores[0], 40)
    claimed: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def drain(index: int) -> None:
        barrier.wait()
        while batch := stores[index].claim(3):
            claimed[index].extend(job.job_id for job in batch)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed[0] + claimed[1]) == sorted(ids)  # every job once, none twice
    for index, store in enumerate(stores):
        for job_id in claimed[index]:
            assert store.get(job_id).owner == f"replica-{index}"
        store.close()


def test_a_dead_replicas_jobs_are_taken_over_after_its_lease(database_url: str) -> None:
    import time

    # Leases long enough that a stalled busy machine cannot expire one between two statements.
    dead = JobStore(database_url, replica="dead", lease_s=3.0)
    alive = JobStore(database_url, replica="alive", lease_s=3.0)
    (job_id,) = _add_jobs(dead, 1)
    assert [j.job_id for j in dead.claim(1)] == [job_id]
    assert alive.recover() == 0 and alive.claim(1) == []  # leased: not touched
    assert dead.renew([job_id]) == 1
    time.sleep(3.5)  # "dead" stops renewing
    assert alive.recover() == 1
    (taken,) = alive.claim(1)
    assert taken.owner == "alive" and taken.attempts == 2
    assert dead.complete(job_id, {"asset_ids": []}) is False  # the late replica cannot complete it
    assert dead.fail(job_id, "late", retry=True) == "running"  # nor requeue it
    assert alive.complete(job_id, {"asset_ids": []}) is True
    final = alive.get(job_id)
    assert final.state == "succeeded" and final.completions == 1
    dead.close()
    alive.close()


def test_jobs_database_from_before_leases_gains_the_columns(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:  # the table as the first release created it
        conn.execute("CREATE TABLE jobs (job_id VARCHAR(40) PRIMARY KEY, state VARCHAR(16), key_id VARCHAR(12), "
                     "user TEXT, request JSON, total INTEGER, done INTEGER, attempts INTEGER, completions INTEGER, "
                     "reserved_seconds FLOAT, result JSON, error TEXT, webhook_url TEXT, webhook_state VARCHAR(16), "
                     "created_at DATETIME, started_at DATETIME, finished_at DATETIME)")
        conn.execute("INSERT INTO jobs VALUES ('j_old', 'running', 'kkkkkkkkkkkk', 'key:k', '{}', 1, 0, 1, 0, 1.0, "
                     "NULL, NULL, NULL, 'none', '2026-11-01 10:00:00.000000', NULL, NULL)")
    store = JobStore(path)
    assert store.recover(at_start=True) == 1  # a job left running by the old server is resumed
    assert [job.job_id for job in store.claim(1)] == ["j_old"]
    store.close()


def test_shared_rate_limit_holds_across_replicas(database_url: str) -> None:
    """Two replicas' limiters on one database share a key's bucket (2 a minute, burst 2)."""
    from musicops.serving.keys import ApiKey, SharedRateLimiter

    stores = [KeyStore(database_url), KeyStore(database_url)]
    first, second = (SharedRateLimiter(store) for store in stores)
    key = ApiKey("r" * 12, "r", None, 2.0, None)
    assert first.acquire(key, now=1000.0) == 0 and second.acquire(key, now=1000.0) == 0
    assert first.acquire(key, now=1000.0) == pytest.approx(30.0)
    assert second.acquire(key, now=1015.0) == pytest.approx(15.0)
    assert second.acquire(key, now=1030.0) == 0
    assert first.acquire(key, now=1020.0) == pytest.approx(30.0)  # a lagging clock refills nothing
    for store in stores:
        store.close()


def test_shared_rate_limit_grants_exactly_the_burst_under_contention(database_url: str) -> None:
    import threading

    from musicops.serving.keys import ApiKey, SharedRateLimiter

    stores = [KeyStore(database_url) for _ in range(2)]
    limiters = [SharedRateLimiter(store) for store in stores]
    key = ApiKey("c" * 12, "c", None, 5.0, None)
    grants: list[bool] = []
    barrier = threading.Barrier(10)

    def call(index: int) -> None:
        barrier.wait()
        grants.append(limiters[index % 2].acquire(key, now=5000.0) == 0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert grants.count(True) == 5 and len(grants) == 10
    for store in stores:
        store.close()


@pytest.mark.slow  # PostgreSQL
def test_key_store_picks_the_limiter_for_its_database(tmp_path, postgres) -> None:
    from musicops.serving.keys import SharedRateLimiter

    with_file, with_server = KeyStore(tmp_path / "keys.db"), KeyStore(postgres.create_database())
    assert isinstance(with_file.rate_limiter(), RateLimiter)
    assert isinstance(with_server.rate_limiter(), SharedRateLimiter)
    with_file.close()
    with_server.close()
