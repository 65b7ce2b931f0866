"""jobs: the first released schema (the jobs table), as `create_all` made it in 202d868.

Revision ID: jobs_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import UTC_DATETIME, create_index, create_table, drop_table, has_table

revision = "jobs_0001"
down_revision = None
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "jobs")


def upgrade() -> None:
    create_table(
        "jobs",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(12), nullable=False),
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("completions", sa.Integer(), nullable=False),
        sa.Column("reserved_seconds", sa.Float(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_state", sa.String(16), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="jobs_pkey"),
    )
    create_index("ix_jobs_state", "jobs", ["state"])
    create_index("ix_jobs_key_id", "jobs", ["key_id"])
    create_index("ix_jobs_created_at", "jobs", ["created_at"])


def downgrade() -> None:
    drop_table("jobs")
