"""provenance: asset_owners, the API tenant an asset was made for (b1b3479).

Revision ID: provenance_0004
Revises: provenance_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import create_index, create_table, drop_table, has_table

revision = "provenance_0004"
down_revision = "provenance_0003"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "asset_owners")


def upgrade() -> None:
    create_table(
        "asset_owners",
        sa.Column("asset_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("asset_id", name="asset_owners_pkey"),
    )
    create_index("ix_asset_owners_tenant", "asset_owners", ["tenant"])


def downgrade() -> None:
    drop_table("asset_owners")
