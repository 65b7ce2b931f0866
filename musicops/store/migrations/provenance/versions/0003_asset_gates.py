"""provenance: asset_gates, verdicts of gates run after an asset was stored (bf6daef).

Revision ID: provenance_0003
Revises: provenance_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import (
    JSON_B,
    UTC_DATETIME,
    create_index,
    create_table,
    drop_table,
    has_table,
)

revision = "provenance_0003"
down_revision = "provenance_0002"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "asset_gates")


def upgrade() -> None:
    create_table(
        "asset_gates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_id", sa.String(128), nullable=False),
        sa.Column("gate", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("details", JSON_B, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="asset_gates_pkey"),
    )
    create_index("ix_asset_gates_asset_id", "asset_gates", ["asset_id"])


def downgrade() -> None:
    drop_table("asset_gates")
