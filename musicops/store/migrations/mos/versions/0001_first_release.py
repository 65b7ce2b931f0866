"""mos: the first released schema (campaigns, campaign assets, raters, items, ratings), b4af9eb.

Revision ID: mos_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from musicops.store.migrations.steps import UTC_DATETIME, create_index, create_table, drop_table, has_table

revision = "mos_0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("mos_campaigns", "mos_campaign_assets", "mos_raters", "mos_items", "mos_ratings")


def present(conn: Connection) -> bool:
    return all(has_table(conn, name) for name in TABLES)


def upgrade() -> None:
    create_table(
        "mos_campaigns",
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("scale_min", sa.Float(), nullable=False),
        sa.Column("scale_max", sa.Float(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("clips_per_rater", sa.Integer(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("n_traps", sa.Integer(), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name="mos_campaigns_pkey"),
    )
    create_table(
        "mos_campaign_assets",
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("asset_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("audio_sha256", sa.String(64), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("gold_score", sa.Float(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["mos_campaigns.campaign_id"],
                                name="mos_campaign_assets_campaign_id_fkey"),
        sa.PrimaryKeyConstraint("campaign_id", "asset_id", name="mos_campaign_assets_pkey"),
    )
    create_table(
        "mos_raters",
        sa.Column("rater_id", sa.String(40), nullable=False),
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("rater_index", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("invited_at", UTC_DATETIME, nullable=False),
        sa.Column("consented_at", UTC_DATETIME, nullable=True),
        sa.Column("screened_out", sa.Boolean(), nullable=False),
        sa.Column("screen_reason", sa.Text(), nullable=True),
        sa.Column("screened_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["mos_campaigns.campaign_id"], name="mos_raters_campaign_id_fkey"),
        sa.PrimaryKeyConstraint("rater_id", name="mos_raters_pkey"),
        sa.UniqueConstraint("campaign_id", "rater_index", name="uq_mos_rater_index"),
        sa.UniqueConstraint("token_hash", name="mos_raters_token_hash_key"),
    )
    create_index("ix_mos_raters_campaign_id", "mos_raters", ["campaign_id"])
    create_table(
        "mos_items",
        sa.Column("item_id", sa.String(40), nullable=False),
        sa.Column("rater_id", sa.String(40), nullable=False),
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("trap_expected", sa.Float(), nullable=True),
        sa.Column("reference_asset_id", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(["rater_id"], ["mos_raters.rater_id"], name="mos_items_rater_id_fkey"),
        sa.PrimaryKeyConstraint("item_id", name="mos_items_pkey"),
        sa.UniqueConstraint("rater_id", "position", name="uq_mos_item_position"),
    )
    create_index("ix_mos_items_rater_id", "mos_items", ["rater_id"])
    create_index("ix_mos_items_campaign_id", "mos_items", ["campaign_id"])
    create_table(
        "mos_ratings",
        sa.Column("item_id", sa.String(40), nullable=False),
        sa.Column("rater_id", sa.String(40), nullable=False),
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("submission_id", sa.String(128), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["mos_items.item_id"], name="mos_ratings_item_id_fkey"),
        sa.PrimaryKeyConstraint("item_id", name="mos_ratings_pkey"),
    )
    create_index("ix_mos_ratings_rater_id", "mos_ratings", ["rater_id"])
    create_index("ix_mos_ratings_campaign_id", "mos_ratings", ["campaign_id"])


def downgrade() -> None:
    for name in reversed(TABLES):
        drop_table(name)
