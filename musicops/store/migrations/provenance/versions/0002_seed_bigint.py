"""provenance: assets.seed becomes BIGINT (4ea2b24): 64-bit RNG seeds overflow INTEGER on PostgreSQL.

Revision ID: provenance_0002
Revises: provenance_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import column_type

revision = "provenance_0002"
down_revision = "provenance_0001"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return isinstance(column_type(conn, "assets", "seed"), sa.BigInteger)


def _seed(type_: sa.types.TypeEngine, existing: sa.types.TypeEngine) -> None:
    # SQLite cannot ALTER a column's type: batch mode copies the table (rows and indexes) over.
    with op.batch_alter_table("assets") as batch:
        batch.alter_column("seed", type_=type_, existing_type=existing, existing_nullable=False)


def upgrade() -> None:
    if not present(op.get_bind()):
        _seed(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _seed(sa.Integer(), sa.BigInteger())
