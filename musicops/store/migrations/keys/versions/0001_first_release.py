"""keys: the first released schema (api_keys, usage), as `create_all` made it in 202d868.

Revision ID: keys_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import UTC_DATETIME, create_table, drop_table, has_table

revision = "keys_0001"
down_revision = None
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "api_keys") and has_table(conn, "usage")


def upgrade() -> None:
    create_table(
        "api_keys",
        sa.Column("key_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("quota_minutes_per_day", sa.Float(), nullable=True),
        sa.Column("rate_per_min", sa.Float(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("revoked_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="api_keys_pkey"),
        sa.UniqueConstraint("name", name="api_keys_name_key"),
    )
    create_table(
        "usage",
        sa.Column("key_id", sa.String(12), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "day", name="usage_pkey"),
    )


def downgrade() -> None:
    drop_table("usage")
    drop_table("api_keys")
