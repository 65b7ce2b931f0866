"""Alembic migrations (musicops.store.migrations) on real SQLite files and a real PostgreSQL server.

- The head schema equals what the models declare (autogenerate's compare_metadata finds nothing),
  with all four histories sharing one database (their version tables apart).
- A database at the first released schema, with rows, upgrades to head and keeps every row; so does
  one made by `create_all` before migrations (no version table), stamped where it matches.
- A database upgraded by a newer musicops is refused with a message that says so.
- Concurrent openers (two replicas) both come up at head.
- `musicops db upgrade/current --json` on a state directory.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from musicops.store import migrations
from musicops.store.database import make_engine

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def models(history: str) -> sa.MetaData:
    """The metadata the current code declares for one history."""
    if history == "provenance":
        from musicops.store.provenance import Base

        return Base.metadata
    if history == "mos":
        from musicops.evaluation.mos.db import Base as MosBase

        return MosBase.metadata
    if history == "keys":
        from musicops.serving.keys import _Base as KeysBase

        return KeysBase.metadata
    from musicops.serving.jobs import _Base as JobsBase

    return JobsBase.metadata


def schema_diff(engine: sa.Engine, history: str) -> list[Any]:
    """What autogenerate would change to make the database match the models (only this history's tables)."""
    metadata = models(history)

    def mine(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return type_ != "table" or name in metadata.tables

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": mine,
                                                         "version_table": migrations.version_table(history)})
        return compare_metadata(context, metadata)


def insert(engine: sa.Engine, table: str, **values: Any) -> None:
    """Insert through the table as the database has it (reflected), not as the models declare it."""
    with engine.begin() as conn:
        conn.execute(sa.Table(table, sa.MetaData(), autoload_with=conn).insert().values(**values))


def rows(engine: sa.Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        return [dict(r._mapping) for r in conn.execute(sa.select(reflected))]


def forget_versions(engine: sa.Engine, history: str) -> None:
    """Make the database look made by `create_all` before there were migrations."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {migrations.version_table(history)}"))


@pytest.fixture
def engine(database_url: str):
    made = make_engine(database_url)
    yield made
    made.dispose()


# ------------------------------------------------------------------------------------- head = models


def test_the_head_schema_is_what_the_models_declare(engine: sa.Engine) -> None:
    for history in migrations.HISTORIES:  # one database for all four: version tables kept apart
        status = migrations.upgrade(engine, history)
        assert status.current == status.head == migrations.head(history)
    for history in migrations.HISTORIES:
        assert schema_diff(engine, history) == [], history
    tables = set(sa.inspect(engine).get_table_names())
    assert {migrations.version_table(h) for h in migrations.HISTORIES} <= tables


def test_the_diff_check_can_fail(engine: sa.Engine) -> None:
    """The comparison above sees a missing column (so its empty answer means something)."""
    migrations.upgrade(engine, "keys")
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE api_keys DROP COLUMN admin"))
    diff = schema_diff(engine, "keys")
    assert any(d[0] == "add_column" and d[3].name == "admin" for d in diff), diff


def test_each_history_is_a_straight_line_from_its_first_release() -> None:
    firsts = {"provenance": "provenance_0001", "mos": "mos_0001", "keys": "keys_0001", "jobs": "jobs_0001"}
    for history, first in firsts.items():
        script = migrations.script_directory(history)
        assert script.get_bases() == [first] and len(script.get_heads()) == 1


def test_the_migration_scripts_are_package_data() -> None:
    """An installed wheel must carry every revision script (they are loaded by path, not imported)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert "musicops.store.migrations" in setuptools["packages"]
    globs = setuptools["package-data"]["musicops.store.migrations"]
    scripts = sorted((ROOT / "musicops/store/migrations").glob("*/versions/*.py"))
    assert len(scripts) == 13
    for script in scripts:
        rel = script.relative_to(ROOT / "musicops/store/migrations").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


# ------------------------------------------------------------------ first release -> head, data kept


def test_provenance_from_the_first_release_keeps_its_rows(engine: sa.Engine, database_url: str) -> None:
    from musicops.store.provenance import AssetRecord, ProvenanceDB

    migrations.upgrade(engine, "provenance", "provenance_0001")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version_provenance", "assets", "batches"}
    json_cols = {"files": {"wav": {"sha256": "a" * 64, "size": 10}}, "params": {"steps": 3}, "postprocess": {},
                 "checks": [], "tags": {"mood": "calm"}}
    insert(engine, "assets", asset_id="old", cache_key="k" * 64, sha256="a" * 64, prompt="p", normalized_prompt="p",
           seed=7, model_name="m", model_uri="models:/m/1", passed=True, batch_id="b1", variation=0,
           duration_s=1.0, sample_rate=32000, generation_seconds=0.5, created_at=NOW, **json_cols)
    insert(engine, "batches", batch_id="b1", params={}, started_at=NOW, status="finished", counts={"ok": 1})

    with ProvenanceDB(database_url) as db:  # opening upgrades
        old = db.get_asset("old")
        assert old is not None and old.seed == 7 and old.tags == {"mood": "calm"} and old.tenant is None
        assert old.lineage == {}  # provenance_0005: rows from before it read as no recorded lineage
        assert old.created_at == NOW and db.get_batch("b1").counts == {"ok": 1}
        big = AssetRecord(asset_id="new", cache_key="n" * 64, sha256="b" * 64, files={}, prompt="q",
                          normalized_prompt="q", seed=2**63 - 1, params={}, model_name="m", model_uri="u",
                          batch_id="b1", duration_s=1.0, sample_rate=32000, generation_seconds=0.1, passed=True,
                          tenant="acme", lineage={"training_data": {"dataset": "d", "dataset_hash": "h"}})
        db.add_asset(big)  # BIGINT seed (provenance_0002) and asset_owners (provenance_0004)
        db.record_gate("old", "copyright", True, {"score": 0.1})
        assert db.get_asset("new").seed == 2**63 - 1 and db.get_asset("new").tenant == "acme"
        assert db.get_asset("new").lineage["training_data"]["dataset_hash"] == "h"
        assert db.count_assets() == 2 and db.gates_for("old")[0]["passed"] is True
    assert migrations.current(engine, "provenance").current == "provenance_0005"
    assert schema_diff(engine, "provenance") == []


def test_mos_from_the_first_release_keeps_its_rows(engine: sa.Engine, database_url: str) -> None:
    from musicops.evaluation.mos.service import MosService

    migrations.upgrade(engine, "mos", "mos_0001")
    assert "mos_plays" not in sa.inspect(engine).get_table_names()
    insert(engine, "mos_campaigns", campaign_id="c1", name="old", method="acr", scale_min=1, scale_max=5, quorum=1,
           seed=2**40, n_traps=0, instructions="", status="open", created_at=NOW)
    insert(engine, "mos_raters", rater_id="r1", campaign_id="c1", rater_index=0, token_hash="t" * 64,
           invited_at=NOW, screened_out=False)
    insert(engine, "mos_items", item_id="i1", rater_id="r1", campaign_id="c1", position=0, asset_id="a1",
           kind="rate", prompt="p")
    insert(engine, "mos_ratings", item_id="i1", rater_id="r1", campaign_id="c1", score=4.0, submission_id="s1",
           created_at=NOW)

    with MosService(database_url) as svc:  # opening upgrades
        svc.record_served("i1", 0, 10, 10)  # mos_plays (mos_0002)
    assert [r["score"] for r in rows(engine, "mos_ratings")] == [4.0]
    assert rows(engine, "mos_campaigns")[0]["seed"] == 2**40
    assert [(r["item_id"], r["end"]) for r in rows(engine, "mos_plays")] == [("i1", 10)]
    assert schema_diff(engine, "mos") == []


def test_keys_from_the_first_release_keep_working(engine: sa.Engine, database_url: str) -> None:
    from musicops.serving.keys import KeyStore, _digest

    migrations.upgrade(engine, "keys", "keys_0001")
    salt, secret = "00" * 16, "s" * 40
    insert(engine, "api_keys", key_id="0123456789ab", name="legacy", salt=salt, digest=_digest(salt, secret),
           quota_minutes_per_day=5.0, created_at=NOW)
    insert(engine, "usage", key_id="0123456789ab", day="2026-11-01", seconds=30.0)

    store = KeyStore(database_url)  # opening upgrades
    try:
        key = store.verify(f"mko_0123456789ab_{secret}")
        assert key is not None and (key.name, key.tenant, key.admin, key.quota_minutes_per_day) == (
            "legacy", "legacy", False, 5.0)
        assert store.used_seconds("0123456789ab", "2026-11-01") == 30.0
        assert store.create("new", tenant="acme", admin=True)[0].admin is True
    finally:
        store.close()
    assert "rate_buckets" in sa.inspect(engine).get_table_names()
    assert schema_diff(engine, "keys") == []


def test_jobs_from_the_first_release_keep_their_queue(engine: sa.Engine, database_url: str) -> None:
    from musicops.serving.jobs import JobStore

    migrations.upgrade(engine, "jobs", "jobs_0001")
    insert(engine, "jobs", job_id="j_old", state="queued", key_id="0123456789ab", user="key:legacy",
           request={"prompt": "p"}, total=2, done=0, attempts=0, completions=0, reserved_seconds=4.0,
           webhook_state="none", created_at=NOW)

    store = JobStore(database_url, replica="r1", lease_s=30)  # opening upgrades
    try:
        (claimed,) = store.claim(5)  # owner + lease_until (jobs_0002)
        assert (claimed.job_id, claimed.request, claimed.owner) == ("j_old", {"prompt": "p"}, "r1")
        store.set_webhook_state("j_old", "failed", "HTTP 500")  # webhook_error (jobs_0003)
        assert store.get("j_old").webhook_error == "HTTP 500"
    finally:
        store.close()
    assert schema_diff(engine, "jobs") == []


# ------------------------------------------------------------- databases made before migrations


def test_a_database_from_before_migrations_is_stamped_where_it_matches(engine: sa.Engine) -> None:
    """Made by `create_all` at the keys_0002 release: matched to keys_0002, upgraded, rows kept;
    `current` reports the match without writing anything."""
    migrations.upgrade(engine, "keys", "keys_0002")
    forget_versions(engine, "keys")
    insert(engine, "rate_buckets", key_id="0123456789ab", tokens=3.0, updated=1.0)

    seen = migrations.current(engine, "keys")
    assert (seen.current, seen.stamped, seen.up_to_date) == (None, "keys_0002", False)
    assert "alembic_version_keys" not in sa.inspect(engine).get_table_names()  # current changed nothing

    status = migrations.upgrade(engine, "keys")
    assert (status.before, status.stamped, status.current) == (None, "keys_0002", "keys_0003")
    assert rows(engine, "rate_buckets") == [{"key_id": "0123456789ab", "tokens": 3.0, "updated": 1.0}]
    assert schema_diff(engine, "keys") == []


def test_a_provenance_database_grown_by_create_all_is_matched_and_completed(engine: sa.Engine,
                                                                            database_url: str) -> None:
    """First release (INTEGER seed), then a later release's `create_all` added asset_gates but never
    widened the seed: matched to provenance_0001, the seed is widened, asset_gates kept as it is."""
    from musicops.store.provenance import Base, ProvenanceDB

    migrations.upgrade(engine, "provenance", "provenance_0001")
    forget_versions(engine, "provenance")
    Base.metadata.tables["asset_gates"].create(engine)
    insert(engine, "asset_gates", asset_id="a1", gate="copyright", passed=False, details={"score": 0.9},
           created_at=NOW)

    with ProvenanceDB(database_url) as db:
        assert db.gates_for("a1") == [{"gate": "copyright", "passed": False, "details": {"score": 0.9},
                                       "created_at": NOW.isoformat()}]
    status = migrations.current(engine, "provenance")
    assert status.current == "provenance_0005"
    assert schema_diff(engine, "provenance") == []


def test_a_job_queue_altered_on_open_gains_what_it_lacks(engine: sa.Engine) -> None:
    """The pre-migration code added owner/lease_until with ALTER TABLE (no index) and created
    nothing else: matched to jobs_0001, and the upgrade adds only the missing index and column."""
    migrations.upgrade(engine, "jobs", "jobs_0001")
    forget_versions(engine, "jobs")
    with engine.begin() as conn:  # exactly what serving/jobs.py's _ADDED_COLUMNS did
        conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN owner VARCHAR(128)"))
        conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN lease_until TIMESTAMP"))  # no time zone
    lease = datetime(2026, 11, 1, 12, 5)  # naive, as a TIMESTAMP column holds it
    insert(engine, "jobs", job_id="j1", state="running", key_id="k", user="u", request={}, total=1, done=0,
           attempts=1, completions=0, reserved_seconds=1.0, webhook_state="none", created_at=NOW, owner="r9",
           lease_until=lease)

    status = migrations.upgrade(engine, "jobs")
    assert (status.stamped, status.current) == ("jobs_0001", "jobs_0003")
    assert [(r["job_id"], r["owner"]) for r in rows(engine, "jobs")] == [("j1", "r9")]
    assert schema_diff(engine, "jobs") == []  # index added, lease_until now the models' type
    from musicops.serving.jobs import JobStore

    store = JobStore(engine.url.render_as_string(hide_password=False), replica="r9", lease_s=30)
    try:  # the old lease reads back as that UTC time
        assert store.get("j1").lease_until == lease.replace(tzinfo=UTC)
    finally:
        store.close()


def test_a_database_upgraded_by_a_newer_musicops_is_refused_clearly(engine: sa.Engine, database_url: str) -> None:
    from musicops.store.provenance import ProvenanceDB

    migrations.upgrade(engine, "provenance")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version_provenance SET version_num = 'provenance_9999'"))
    with pytest.raises(migrations.SchemaError, match="provenance_9999.*newer musicops"):
        ProvenanceDB(database_url)
    with pytest.raises(migrations.SchemaError, match="newer musicops"):
        migrations.current(engine, "provenance")


_OPENER = """
import sys, threading, time
from musicops.store import migrations
from musicops.store.database import make_engine
url, start = sys.argv[1], float(sys.argv[2])
engines = [make_engine(url) for _ in range(2)]
out = []
time.sleep(max(0.0, start - time.time()))
threads = [threading.Thread(target=lambda e=e: out.append(migrations.upgrade(e, "jobs").current)) for e in engines]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join(out))
"""


def test_replicas_opening_together_all_come_up_at_head(database_url: str) -> None:
    """Three processes (replicas), two threads each, upgrade one fresh database at the same moment
    (advisory lock on PostgreSQL, retry on SQLite, turns within a process): all end at head, and
    the schema is made once."""
    start = time.time() + 4  # after every process has imported musicops
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, database_url, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.split() == ["jobs_0003"] * 2, err
    engine = make_engine(database_url)
    try:
        assert schema_diff(engine, "jobs") == []
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_db_upgrade_and_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from musicops.cli import app

    for name in ("MUSICOPS_DATABASE_URL", "MUSICOPS_MOS_DATABASE_URL", "MUSICOPS_SERVING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path))
    runner = CliRunner()

    before = runner.invoke(app, ["db", "current", "--json"])
    assert before.exit_code == 0, before.output
    assert {d["database"]: d["current"] for d in json.loads(before.stdout)} == dict.fromkeys(migrations.HISTORIES)
    assert not (tmp_path / "provenance.db").exists()  # current creates nothing

    upgraded = runner.invoke(app, ["db", "upgrade", "--json"])
    assert upgraded.exit_code == 0, upgraded.output
    report = json.loads(upgraded.stdout)
    assert {d["database"]: d["current"] for d in report} == {h: migrations.head(h) for h in migrations.HISTORIES}
    assert all(d["up_to_date"] and d["before"] is None for d in report)
    for name in ("provenance.db", "mos.db", "serve/keys.db", "serve/jobs.db"):
        assert (tmp_path / name).is_file(), name

    after = runner.invoke(app, ["db", "current"])
    assert after.exit_code == 0 and "up to date" in after.stdout

    mos = make_engine(f"sqlite:///{tmp_path / 'mos.db'}")
    with mos.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version_mos SET version_num = 'mos_9999'"))
    mos.dispose()
    newer = runner.invoke(app, ["db", "upgrade"])
    assert newer.exit_code != 0 and "newer musicops" in newer.output
