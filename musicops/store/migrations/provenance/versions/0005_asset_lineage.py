"""provenance: assets.lineage, training data, template and preset of each asset (issue #19).

Revision ID: provenance_0005
Revises: provenance_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import JSON_B, add_column, has_column

revision = "provenance_0005"
down_revision = "provenance_0004"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_column(conn, "assets", "lineage")


def upgrade() -> None:
    add_column("assets", sa.Column("lineage", JSON_B, nullable=True))  # NULL on rows stored before


def downgrade() -> None:
    with op.batch_alter_table("assets") as batch:  # SQLite: batch mode copies the table without it
        batch.drop_column("lineage")
