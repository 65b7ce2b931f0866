"""One way to open a database from a SQLAlchemy URL, for every store (provenance, MOS, serving).

Embedded default: a SQLite file in the state directory, in WAL mode with a busy timeout so readers
(the API) run while a writer (a batch) commits. Any other URL (PostgreSQL for a shared deployment)
gets connection pre-ping, since a server can drop idle connections.

Every store declares its tables on a `new_metadata()` (one naming convention) and brings its
database to the current schema with `musicops.store.migrations.upgrade` (Alembic) when it opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.expression import Executable

SQLITE_BUSY_MS = 30_000

# PostgreSQL's own default names, so databases created (by `create_all`) before there was a
# convention already carry the names the migrations and models use; SQLite gets the same names.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


def new_metadata() -> MetaData:
    """The MetaData of one database's tables (each database has its own, all built this way):
    `class Base(DeclarativeBase): metadata = new_metadata()`."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (the API) run while a writer (the batch) commits; busy_timeout waits, not fails."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")  # first: the statements below may wait
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL, far fewer fsyncs
    finally:
        cursor.close()


def _enable_wal(cursor: Any, attempts: int = 40) -> None:
    """Switch the file to WAL (persistent: only its first connection ever switches it).

    The switch needs the file to itself, and SQLite answers "database is locked" at once, without
    the busy wait, when another process opened the same new file in that instant (replicas starting
    together on a busy machine failed this way), so it is retried.
    """
    import sqlite3
    import time

    for attempt in range(attempts):
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt + 1 == attempts:
                raise
            time.sleep(min(0.5, 0.02 * (attempt + 1)))


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, what: str = "database") -> Engine:
    """An engine for `url`: SQLite files get WAL + busy timeout (their folder is created), in-memory
    SQLite one shared connection, servers pre-ping."""
    if not url:
        raise ValueError(f"the {what} needs a database URL")
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    kwargs: dict[str, Any] = {}
    if not database or database == ":memory:" or database.startswith("file:"):
        # One shared in-memory database; the default pool would give each thread its own.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False}
    engine = create_engine(url, **kwargs)
    event.listen(engine, "connect", sqlite_pragmas)
    return engine


def rows_changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE/DELETE and return how many rows it changed (compare-and-set checks use this).

    Why a helper: `Session.execute` is typed as returning `Result`, while DML returns a
    `CursorResult`, the class that carries `rowcount`; one typed place instead of a cast per call."""
    result = session.execute(statement)
    return cast("CursorResult[Any]", result).rowcount
