"""Versioned schema migrations (Alembic) for every database musicops keeps, run from code.

Four migration histories, one folder each under this package (`<name>/versions/*.py`):
`provenance` (assets, batches, gates, owners), `mos` (listening tests), `keys` and `jobs` (the
serving database: two SQLite files by default, one shared PostgreSQL database for replicas). Each
history records its revision in a version table of its own (`alembic_version_<name>`), so histories
that share one PostgreSQL database never see each other's revision.

No alembic.ini or env.py: `upgrade` drives Alembic's `EnvironmentContext` over the folder shipped
as package data. A database made by `create_all` before there were migrations (no version table)
is matched to the last revision whose schema it already has (each revision's `present()`), stamped
there and upgraded; revisions only add, and skip what is already there, so no row is lost.

Concurrent openers (two serving replicas starting together): the whole upgrade runs in one
transaction, on PostgreSQL under a transaction-level advisory lock and on SQLite as one
`BEGIN IMMEDIATE` write transaction, so the second opener waits and then finds the database at head
(a SQLite lock held past the busy timeout is retried). Within one process, upgrades take turns
(Alembic's `op` and `context` proxies are process-wide).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from musicops.errors import MusicopsError

HERE = Path(__file__).resolve().parent
HISTORIES = ("provenance", "mos", "keys", "jobs")
_SQLITE_ATTEMPTS = 4
# Alembic's `op` and `context` are module-level proxies: one migration at a time per process.
_IN_PROCESS = threading.Lock()


class SchemaError(MusicopsError, RuntimeError):
    """A database this code cannot bring to its schema (e.g. one upgraded by a newer musicops)."""


@dataclass(frozen=True)
class SchemaStatus:
    """Where one database stands: its revision before and after, and the code's head revision."""

    history: str
    url: str
    before: str | None  # None: no version table (empty, or made before migrations)
    current: str | None
    head: str
    stamped: str | None = None  # revision a pre-migration database was found to match

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.history, "url": self.url, "before": self.before, "current": self.current,
                "head": self.head, "stamped": self.stamped, "up_to_date": self.up_to_date}


def version_table(history: str) -> str:
    return f"alembic_version_{history}"


def _check(history: str) -> None:
    if history not in HISTORIES:
        raise ValueError(f"unknown database {history!r}; expected one of {', '.join(HISTORIES)}")


@cache
def script_directory(history: str) -> Any:
    """The history's Alembic ScriptDirectory (revision scripts shipped as package data)."""
    from alembic.script import ScriptDirectory

    _check(history)
    return ScriptDirectory(str(HERE / history))


def head(history: str) -> str:
    heads = script_directory(history).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the {history} migrations have {len(heads)} heads {heads}: merge them")
    return heads[0]


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _lock_key(history: str) -> int:
    """A stable signed 64-bit advisory-lock key per history (pg_advisory_xact_lock takes a bigint)."""
    return int.from_bytes(hashlib.sha256(f"musicops:{history}".encode()).digest()[:8], "big", signed=True)


def _context(conn: Connection, history: str) -> Any:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": version_table(history)})


def _known(history: str, revision: str) -> Any:
    """The revision's Script, or None when this code has no such revision."""
    from alembic.util import CommandError

    try:
        return script_directory(history).get_revision(revision)
    except CommandError:
        return None


def _revision_of(conn: Connection, history: str) -> str | None:
    heads = _context(conn, history).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the {history} database records several revisions {heads}")
    revision = heads[0] if heads else None
    if revision is not None and _known(history, revision) is None:
        raise SchemaError(
            f"the {history} database is at revision {revision!r}, which this musicops does not know "
            f"(its newest is {head(history)!r}): it was upgraded by a newer musicops; run that "
            "version, or restore a backup made before the upgrade")
    return revision


def _matched_revision(conn: Connection, history: str) -> str | None:
    """For a database without a version table: the last revision (from the first, in order) whose
    schema it already holds; None when even the first is absent (an empty database)."""
    script = script_directory(history)
    matched = None
    for revision in reversed(list(script.walk_revisions("base", "heads"))):
        if not revision.module.present(conn):
            break
        matched = revision.revision
    return matched


def _upgrade_in(conn: Connection, history: str, target: str) -> tuple[str | None, str | None, str | None]:
    """Stamp (pre-migration database) and upgrade on one connection; returns (before, stamped, after)."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    script = script_directory(history)
    before = _revision_of(conn, history)
    stamped = None
    if before is None:
        stamped = _matched_revision(conn, history)
        if stamped is not None:
            _context(conn, history).stamp(script, stamped)
    start = before or stamped
    if start != target and not (start and target in _ancestors(history, start)):
        config = Config()
        config.set_main_option("script_location", str(HERE / history))

        def steps(revision: Any, _context: Any) -> Any:
            return script._upgrade_revs(target, revision)

        with EnvironmentContext(config, script, fn=steps, destination_rev=target) as env:
            env.configure(connection=conn, version_table=version_table(history))
            with env.begin_transaction():
                env.run_migrations()
    return before, stamped, _revision_of(conn, history)


def _ancestors(history: str, revision: str) -> set[str]:
    return {r.revision for r in script_directory(history).walk_revisions("base", revision)}


def upgrade(engine: Engine, history: str, target: str | None = None) -> SchemaStatus:
    """Bring `engine`'s database to the head revision of `history` (a no-op when it is there).

    `target` stops at an earlier revision (tests build the first released schema with it); a
    database already past it is left as it is, never downgraded.
    """
    _check(history)
    target = target or head(history)
    if _known(history, target) is None:
        raise ValueError(f"no revision {target!r} in the {history} migrations")
    with engine.connect() as conn:  # the common case, already there: a read, no lock taken
        revision = _revision_of(conn, history)
    if revision is not None and (revision == target or target in _ancestors(history, revision)):
        return SchemaStatus(history, _shown(engine), revision, revision, head(history))
    dialect = engine.dialect.name
    attempts = _SQLITE_ATTEMPTS if dialect == "sqlite" else 1
    for attempt in range(attempts):
        try:
            with _IN_PROCESS, engine.begin() as conn:
                if dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(history)})
                elif dialect == "sqlite":
                    # One write transaction, DDL included (SQLite's DDL is transactional): another
                    # process waits (busy timeout) instead of seeing a half-made schema.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                before, stamped, after = _upgrade_in(conn, history, target)
            return SchemaStatus(history, _shown(engine), before, after, head(history), stamped)
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt + 1 == attempts:
                raise
            time.sleep(0.2 * (attempt + 1))  # another process held the database past the busy timeout
    raise AssertionError("unreachable")


def current(engine: Engine, history: str) -> SchemaStatus:
    """Where the database stands, changing nothing (`current` None: never migrated, or empty)."""
    _check(history)
    with engine.connect() as conn:
        revision = _revision_of(conn, history)
        matched = _matched_revision(conn, history) if revision is None else None
    return SchemaStatus(history, _shown(engine), revision, revision, head(history), matched)
