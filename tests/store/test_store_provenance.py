"""Provenance DB on real SQLAlchemy + SQLite and PostgreSQL: full round trip, exactly-once inserts, batch lifecycle."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from musicops.config import get_settings
from musicops.store.cache import asset_id_for, cache_key, normalize_prompt
from musicops.store.provenance import AssetRecord, ProvenanceDB


@pytest.fixture
def db(database_url: str):
    database = ProvenanceDB(database_url)
    yield database
    database.close()


def make_record(seed: int = 0, prompt: str = "Calm  Piano", batch_id: str = "b1", **overrides) -> AssetRecord:
    normalized = normalize_prompt(prompt)
    params = {"duration_s": 4.0, "guidance_scale": 3.0}
    key = cache_key(normalized, params, "models:/musicops-musicgen/3", seed)
    values = dict(
        asset_id=asset_id_for(key),
        cache_key=key,
        sha256="a" * 64,
        files={"wav": {"sha256": "a" * 64, "size": 1234}, "flac": {"sha256": "b" * 64, "size": 900}},
        prompt=prompt,
        normalized_prompt=normalized,
        seed=seed,
        params=params,
        model_name="musicops-musicgen",
        model_uri="models:/musicops-musicgen/3",
        batch_id=batch_id,
        duration_s=4.0,
        sample_rate=32000,
        generation_seconds=1.25,
        passed=True,
        model_version="3",
        model_run_id="0123abcd",
        user="alice",
        code_version="git:deadbeef",
        postprocess={"target_lufs": -14.0, "true_peak_dbtp": -1.0},
        loudness_before=-20.5,
        loudness_after=-14.0,
        true_peak_after=-1.2,
        checks=[{"name": "clipping", "passed": True, "value": 0.0}],
        line_no=3,
        variation=1,
        tags={"mood": "calm", "genre": ["piano", "ambient"]},
    )
    values.update(overrides)
    return AssetRecord(**values)


def test_round_trip_every_field(db: ProvenanceDB) -> None:
    created = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    record = make_record(created_at=created)
    stored, inserted = db.add_asset(record)
    assert inserted
    assert stored == record
    fetched = db.get_asset(record.asset_id)
    assert fetched == record  # every field, created_at included (UTC-aware after SQLite)
    assert fetched is not None and fetched.created_at is not None and fetched.created_at.tzinfo is not None
    assert db.find_by_cache_key(record.cache_key) == record
    assert db.get_asset("a_missing") is None
    assert db.find_by_cache_key("0" * 64) is None


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'prov.db'}"
    with ProvenanceDB(url) as first:
        stored, _ = first.add_asset(make_record(tags=["calm", "piano"]))
    with ProvenanceDB(url) as second:
        assert second.get_asset(stored.asset_id) == stored


def test_created_at_set_on_insert_and_normalised_to_utc(db: ProvenanceDB) -> None:
    before = datetime.now(UTC)
    stored, _ = db.add_asset(make_record(seed=1))
    assert stored.created_at is not None and before <= stored.created_at <= datetime.now(UTC)
    assert db.get_asset(stored.asset_id) == stored

    plus2 = timezone(timedelta(hours=2))
    local = datetime(2024, 1, 1, 14, 0, tzinfo=plus2)
    stored2, _ = db.add_asset(make_record(seed=2, created_at=local))
    assert stored2.created_at == local and stored2.created_at.tzinfo == UTC
    assert db.get_asset(stored2.asset_id) == stored2

    with pytest.raises(ValueError, match="naive"):
        db.add_asset(make_record(seed=3, created_at=datetime(2024, 1, 1)))


def test_non_finite_loudness_is_stored_as_none(db: ProvenanceDB) -> None:
    record = make_record(
        loudness_before=float("-inf"),
        loudness_after=float("nan"),
        true_peak_after=float("-inf"),
        checks=[{"name": "silence", "passed": False, "value": float("-inf")}],
        passed=False,
    )
    stored, _ = db.add_asset(record)
    fetched = db.get_asset(record.asset_id)
    assert fetched == stored
    assert (fetched.loudness_before, fetched.loudness_after, fetched.true_peak_after) == (None, None, None)
    assert fetched.checks == [{"name": "silence", "passed": False, "value": None}]
    assert fetched.passed is False
    json.dumps(fetched.to_dict(), allow_nan=False)


def test_to_dict_is_json_safe(db: ProvenanceDB) -> None:
    stored, _ = db.add_asset(make_record())
    as_dict = stored.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    assert json.loads(text)["created_at"] == stored.created_at.isoformat()
    assert set(as_dict) == {f.name for f in dataclasses.fields(AssetRecord)}
    inf_record = make_record(loudness_before=float("-inf"))
    assert inf_record.to_dict()["loudness_before"] is None


def test_duplicate_cache_key_returns_existing(db: ProvenanceDB) -> None:
    first, inserted = db.add_asset(make_record(sha256="a" * 64))
    assert inserted and db.count_assets() == 1
    again, inserted_again = db.add_asset(make_record(sha256="c" * 64, user="bob"))
    assert not inserted_again
    assert again == first and again.sha256 == "a" * 64
    assert db.count_assets() == 1


def test_lost_insert_race_returns_winner(db: ProvenanceDB) -> None:
    """The IntegrityError path: another writer committed between our lookup and our insert."""
    winner, inserted = db._insert_asset(make_record(user="winner"))
    assert inserted
    loser, inserted = db._insert_asset(make_record(user="loser"))
    assert not inserted and loser == winner
    assert db.count_assets() == 1


def test_reused_asset_id_for_another_key_is_an_error(db: ProvenanceDB) -> None:
    from sqlalchemy.exc import IntegrityError

    first, _ = db.add_asset(make_record(seed=1))
    with pytest.raises(IntegrityError):
        db.add_asset(make_record(seed=2, asset_id=first.asset_id))
    assert db.count_assets() == 1


def _race(dbs: list[ProvenanceDB], seed: int) -> list[tuple[AssetRecord, bool]]:
    """Both writers released at the same instant with the same cache key."""
    barrier = threading.Barrier(len(dbs))
    results: list[tuple[AssetRecord, bool]] = []
    errors: list[BaseException] = []

    def add(database: ProvenanceDB, who: str) -> None:
        try:
            barrier.wait()
            results.append(database.add_asset(make_record(seed=seed, user=who)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(d, f"t{i}")) for i, d in enumerate(dbs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    return results


@pytest.mark.parametrize("shared_instance", [True, False], ids=["one-instance", "two-instances"])
def test_concurrent_add_same_key_inserts_once(database_url: str, shared_instance: bool) -> None:
    url = database_url
    dbs = [ProvenanceDB(url)] * 2 if shared_instance else [ProvenanceDB(url), ProvenanceDB(url)]
    try:
        for seed in range(10):
            results = _race(dbs, seed)
            assert sorted(inserted for _, inserted in results) == [False, True]
            assert results[0][0] == results[1][0]
        assert dbs[0].count_assets() == 10
    finally:
        for d in dbs:
            d.close()


def test_find_by_cache_keys_chunks(db: ProvenanceDB) -> None:
    stored = [db.add_asset(make_record(seed=i))[0] for i in range(3)]
    missing = [f"{i:064x}" for i in range(1200)]  # forces three IN chunks
    keys = [stored[0].cache_key, *missing, stored[2].cache_key, stored[0].cache_key]
    found = db.find_by_cache_keys(keys)
    assert found == {stored[0].cache_key: stored[0], stored[2].cache_key: stored[2]}
    assert db.find_by_cache_keys([]) == {}


def test_list_and_count_by_batch(db: ProvenanceDB) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    a = db.add_asset(make_record(seed=1, batch_id="b1", created_at=t0 + timedelta(seconds=2)))[0]
    b = db.add_asset(make_record(seed=2, batch_id="b2", created_at=t0 + timedelta(seconds=1)))[0]
    c = db.add_asset(make_record(seed=3, batch_id="b1", created_at=t0 + timedelta(seconds=3)))[0]
    assert db.list_assets() == [b, a, c]
    assert db.list_assets("b1") == [a, c]
    assert db.list_assets("nope") == []
    assert db.list_assets(limit=1, offset=1) == [a]
    assert db.count_assets() == 3 and db.count_assets("b1") == 2


def test_batch_lifecycle(db: ProvenanceDB) -> None:
    assert db.get_batch("b1") is None
    started = db.start_batch(
        "b1",
        prompts_file=Path("/data/prompts.jsonl"),
        prompts_sha256="d" * 64,
        model_uri="models:/musicops-musicgen@champion",
        model_version="3",
        params={"duration_s": 8.0},
        user="alice",
        code_version="git:deadbeef",
    )
    assert started.status == "running" and started.finished_at is None
    assert started.started_at.tzinfo is not None
    assert db.get_batch("b1") == started
    assert started.prompts_file == "/data/prompts.jsonl" and started.counts == {}

    counts = {"total": 10, "generated": 7, "cached": 2, "failed": 1}
    done = db.finish_batch("b1", "finished", counts)
    assert done.status == "finished" and done.counts == counts
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert db.get_batch("b1") == done
    json.dumps(done.to_dict(), allow_nan=False)

    resumed = db.start_batch("b1", user="bob")  # a resumed run reopens the same batch
    assert resumed.status == "running" and resumed.finished_at is None
    assert resumed.started_at == started.started_at and resumed.user == "bob"
    assert resumed.model_version == "3"
    failed = db.finish_batch("b1", "failed", {"total": 10, "failed": 10})
    assert db.get_batch("b1") == failed and failed.status == "failed"


def test_batch_errors(db: ProvenanceDB) -> None:
    with pytest.raises(KeyError):
        db.finish_batch("ghost", "finished", {})
    db.start_batch("b1")
    with pytest.raises(ValueError):
        db.finish_batch("b1", "done", {})
    with pytest.raises(ValueError):
        db.finish_batch("b1", "running", {})
    with pytest.raises(TypeError, match="unknown"):
        db.start_batch("b2", prompt_file="typo.jsonl")


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    from sqlalchemy import text

    with ProvenanceDB(f"sqlite:///{tmp_path / 'prov.db'}") as db, db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_from_settings_default_and_env(state_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ProvenanceDB.from_settings(get_settings()) as default:
        default.add_asset(make_record())
    assert (state_home / "provenance.db").exists()

    monkeypatch.setenv("MUSICOPS_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere' / 'p.db'}")
    with ProvenanceDB.from_settings(get_settings()) as other:
        assert other.count_assets() == 0
    assert (tmp_path / "elsewhere" / "p.db").exists()


def test_in_memory_url_shares_one_database_across_threads() -> None:
    with ProvenanceDB("sqlite://") as mem:
        t = threading.Thread(target=lambda: mem.add_asset(make_record()))
        t.start()
        t.join()
        assert mem.count_assets() == 1


def test_64_bit_seed_round_trips(db: ProvenanceDB) -> None:
    stored, _ = db.add_asset(make_record(seed=2**63 - 1))
    fetched = db.get_asset(stored.asset_id)
    assert fetched is not None and fetched.seed == 2**63 - 1


def test_gate_verdicts_append_to_an_assets_provenance(tmp_path) -> None:
    from musicops.store.provenance import ProvenanceDB

    db = ProvenanceDB(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with pytest.raises(KeyError):
            db.record_gate("a_missing", "copyright", True, {})
        record = make_record()
        db.add_asset(record)
        db.record_gate(record.asset_id, "copyright", False, {"work": "w1", "offset_s": 1.5, "score": float("nan")})
        db.record_gate(record.asset_id, "copyright", True, {"work": None})
        gates = db.gates_for(record.asset_id)
        assert [g["passed"] for g in gates] == [False, True]
        assert gates[0]["details"] == {"work": "w1", "offset_s": 1.5, "score": None}
    finally:
        db.close()


def test_an_assets_tenant_is_recorded_with_it_and_read_back_everywhere(db: ProvenanceDB) -> None:
    """asset_owners is written in the asset's own transaction; batch/CLI assets have no tenant."""
    mine = make_record(seed=1, tenant="acme")
    batch = make_record(seed=2)
    stored, created = db.add_asset(mine)
    assert created and stored.tenant == "acme" and db.add_asset(batch)[0].tenant is None
    assert db.get_asset(mine.asset_id).tenant == "acme" and db.get_asset(batch.asset_id).tenant is None
    assert db.find_by_cache_key(mine.cache_key).tenant == "acme"
    assert {r.asset_id: r.tenant for r in db.find_by_cache_keys([mine.cache_key, batch.cache_key]).values()} == \
        {mine.asset_id: "acme", batch.asset_id: None}
    assert {r.asset_id: r.tenant for r in db.list_assets()} == {mine.asset_id: "acme", batch.asset_id: None}
    assert db.get_asset(mine.asset_id).to_dict()["tenant"] == "acme"
    again, created = db.add_asset(make_record(seed=1, tenant="acme", sha256="c" * 64))
    assert not created and again == stored  # exactly once, owner row included
    with pytest.raises(ValueError, match="tenant"):
        db.add_asset(make_record(seed=3, tenant=""))


def test_a_database_from_before_tenancy_opens_with_its_assets(tmp_path: Path) -> None:
    """asset_owners arrived later: an existing database gains the table, its assets read as untenanted."""
    from sqlalchemy import create_engine, inspect, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with ProvenanceDB(url) as first:
        old = first.add_asset(make_record(seed=5))[0]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE asset_owners"))  # the schema as it was,
        conn.execute(text("DROP TABLE alembic_version_provenance"))  # made before migrations
    assert "asset_owners" not in inspect(engine).get_table_names()
    engine.dispose()
    with ProvenanceDB(url) as second:
        assert second.get_asset(old.asset_id) == old and old.tenant is None
        new = second.add_asset(make_record(seed=6, tenant="acme"))[0]
        assert second.get_asset(new.asset_id).tenant == "acme" and second.count_assets() == 2
