"""keys: rate_buckets, token buckets shared by replicas on one serving database (9b0a5eb).

Revision ID: keys_0002
Revises: keys_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import create_table, drop_table, has_table

revision = "keys_0002"
down_revision = "keys_0001"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "rate_buckets")


def upgrade() -> None:
    create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(12), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="rate_buckets_pkey"),
    )


def downgrade() -> None:
    drop_table("rate_buckets")
