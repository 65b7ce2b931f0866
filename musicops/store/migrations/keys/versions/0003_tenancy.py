"""keys: api_keys.tenant and api_keys.admin (7daad65). Existing keys keep NULL: tenant = the key's
own name, not admin.

Revision ID: keys_0003
Revises: keys_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import add_column, has_column

revision = "keys_0003"
down_revision = "keys_0002"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_column(conn, "api_keys", "tenant") and has_column(conn, "api_keys", "admin")


def upgrade() -> None:
    add_column("api_keys", sa.Column("tenant", sa.String(64), nullable=True))
    add_column("api_keys", sa.Column("admin", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("admin")
        batch.drop_column("tenant")
