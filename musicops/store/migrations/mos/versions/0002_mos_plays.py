"""mos: mos_plays, the byte ranges of a clip sent to its rater (2acb09e): a rating needs the whole clip.

Revision ID: mos_0002
Revises: mos_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import UTC_DATETIME, create_index, create_table, drop_table, has_table

revision = "mos_0002"
down_revision = "mos_0001"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "mos_plays")


def upgrade() -> None:
    create_table(
        "mos_plays",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(40), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("end", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("served_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["mos_items.item_id"], name="mos_plays_item_id_fkey"),
        sa.PrimaryKeyConstraint("id", name="mos_plays_pkey"),
    )
    create_index("ix_mos_plays_item_id", "mos_plays", ["item_id"])


def downgrade() -> None:
    drop_table("mos_plays")
