"""provenance: the first released schema (assets, batches), as `create_all` made it in 32dc17d.

Revision ID: provenance_0001
Revises:
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

revision = "provenance_0001"
down_revision = None
branch_labels = None
depends_on = None


def present(conn: Connection) -> bool:
    return has_table(conn, "assets") and has_table(conn, "batches")


def upgrade() -> None:
    create_table(
        "assets",
        sa.Column("asset_id", sa.String(64), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("files", JSON_B, nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("normalized_prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),  # BIGINT from provenance_0002
        sa.Column("params", JSON_B, nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("model_run_id", sa.String(64), nullable=True),
        sa.Column("model_uri", sa.Text(), nullable=False),
        sa.Column("user", sa.Text(), nullable=True),
        sa.Column("code_version", sa.Text(), nullable=True),
        sa.Column("postprocess", JSON_B, nullable=False),
        sa.Column("loudness_before", sa.Float(), nullable=True),
        sa.Column("loudness_after", sa.Float(), nullable=True),
        sa.Column("true_peak_after", sa.Float(), nullable=True),
        sa.Column("checks", JSON_B, nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("variation", sa.Integer(), nullable=False),
        sa.Column("tags", JSON_B, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("generation_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("asset_id", name="assets_pkey"),
    )
    create_index("ix_assets_cache_key", "assets", ["cache_key"], unique=True)
    create_index("ix_assets_sha256", "assets", ["sha256"])
    create_index("ix_assets_batch_id", "assets", ["batch_id"])
    create_index("ix_assets_created_at", "assets", ["created_at"])
    create_table(
        "batches",
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("prompts_file", sa.Text(), nullable=True),
        sa.Column("prompts_sha256", sa.String(64), nullable=True),
        sa.Column("model_uri", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("params", JSON_B, nullable=False),
        sa.Column("user", sa.Text(), nullable=True),
        sa.Column("code_version", sa.Text(), nullable=True),
        sa.Column("started_at", UTC_DATETIME, nullable=False),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("counts", JSON_B, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="batches_pkey"),
    )


def downgrade() -> None:
    drop_table("batches")
    drop_table("assets")
