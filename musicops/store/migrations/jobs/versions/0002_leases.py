"""jobs: owner (indexed) and lease_until, so replicas claim jobs under renewed leases (6d49867).

Databases that release upgraded with ALTER TABLE on open have the columns but not the index, and
lease_until as a plain TIMESTAMP (without time zone on PostgreSQL); this revision adds whatever is
missing and gives lease_until the models' type. Leases are minutes-long and renewed, so reading the
old values as UTC is safe: a wrong one only expires a lease early or late once.

Revision ID: jobs_0002
Revises: jobs_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import (
    UTC_DATETIME,
    add_column,
    column_type,
    create_index,
    has_column,
    has_index,
)

revision = "jobs_0002"
down_revision = "jobs_0001"
branch_labels = None
depends_on = None


def _lease_type_ok(conn: Connection) -> bool:
    found = column_type(conn, "jobs", "lease_until")
    if conn.dialect.name == "postgresql":
        return bool(getattr(found, "timezone", False))
    return not isinstance(found, sa.TIMESTAMP)  # SQLite: DATETIME, as create_all declares it


def present(conn: Connection) -> bool:
    return (has_column(conn, "jobs", "owner") and has_column(conn, "jobs", "lease_until")
            and has_index(conn, "jobs", "ix_jobs_owner") and _lease_type_ok(conn))


def upgrade() -> None:
    conn = op.get_bind()
    add_column("jobs", sa.Column("owner", sa.String(128), nullable=True))
    add_column("jobs", sa.Column("lease_until", UTC_DATETIME, nullable=True))
    create_index("ix_jobs_owner", "jobs", ["owner"])
    if not _lease_type_ok(conn):
        if conn.dialect.name == "postgresql":
            op.execute("ALTER TABLE jobs ALTER COLUMN lease_until TYPE TIMESTAMP WITH TIME ZONE "
                       "USING lease_until AT TIME ZONE 'UTC'")
        else:  # SQLite cannot ALTER a column's type: batch mode copies the table (rows, indexes) over
            with op.batch_alter_table("jobs") as batch:
                batch.alter_column("lease_until", type_=UTC_DATETIME, existing_type=sa.TIMESTAMP(),
                                   existing_nullable=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_owner", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("owner")
