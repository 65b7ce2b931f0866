"""Building blocks for the revision scripts: portable column types and steps that skip what exists.

A database made by `create_all` before there were migrations can hold any mix of what later
revisions add (a table created on open by one release, a column added by another's ALTER), so each
step checks first; the `present()` checks let `migrations.upgrade` find where such a database stands.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

# The types the models use, spelled for DDL (UTCDateTime stores DateTime(timezone=True)).
JSON_B = sa.JSON().with_variant(JSONB(), "postgresql")  # provenance: JSONB on PostgreSQL
UTC_DATETIME = sa.DateTime(timezone=True)


def has_table(conn: Connection, table: str) -> bool:
    return sa.inspect(conn).has_table(table)


def has_column(conn: Connection, table: str, column: str) -> bool:
    inspector = sa.inspect(conn)
    return inspector.has_table(table) and column in {c["name"] for c in inspector.get_columns(table)}


def has_index(conn: Connection, table: str, index: str) -> bool:
    inspector = sa.inspect(conn)
    return inspector.has_table(table) and index in {i["name"] for i in inspector.get_indexes(table)}


def column_type(conn: Connection, table: str, column: str) -> Any:
    for found in sa.inspect(conn).get_columns(table):
        if found["name"] == column:
            return found["type"]
    return None


def create_table(name: str, *columns: Any) -> None:
    """op.create_table unless the table exists (made on open by a release before migrations)."""
    if not has_table(op.get_bind(), name):
        op.create_table(name, *columns)


def create_index(name: str, table: str, columns: list[str], unique: bool = False) -> None:
    if not has_index(op.get_bind(), table, name):
        op.create_index(name, table, columns, unique=unique)


def add_column(table: str, column: sa.Column[Any]) -> None:
    """op.add_column unless an earlier release's ALTER TABLE on open already added it."""
    if not has_column(op.get_bind(), table, column.name):
        op.add_column(table, column)


def drop_table(name: str) -> None:
    if has_table(op.get_bind(), name):
        op.drop_table(name)
