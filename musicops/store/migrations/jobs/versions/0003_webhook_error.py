"""jobs: webhook_error, why a webhook delivery failed (742f41e).

Revision ID: jobs_0003
Revises: jobs_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import add_column, has_column

revision = "jobs_0003"
down_revision = "jobs_0002"
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_column(conn, "jobs", "webhook_error")


def upgrade() -> None:
    add_column("jobs", sa.Column("webhook_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_error")
