"""MOS campaign tables (SQLAlchemy 2): campaigns, their assets, raters, per-rater items, ratings.

Own metadata with `mos_`-prefixed tables, so the MOS store can share a PostgreSQL database with the
provenance tables without name clashes, and live in its own SQLite file (`HOME/mos.db`) by default.
Integrity rules live in the schema where a race could break them: one rating per item (the item
belongs to exactly one rater, so one rating per (rater, item)), one token hash per rater, one
rater index per campaign (the index seeds the rater's assignment).

Schema: Alembic history `mos` (musicops/store/migrations/mos), applied when the store opens;
`mos_plays` came in its second revision.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from musicops.store import database, migrations
from musicops.store.provenance import UTCDateTime


class Base(DeclarativeBase):
    metadata = database.new_metadata()


class CampaignRow(Base):
    __tablename__ = "mos_campaigns"

    campaign_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(16))
    scale_min: Mapped[float] = mapped_column(Float)
    scale_max: Mapped[float] = mapped_column(Float)
    quorum: Mapped[int] = mapped_column(Integer)
    clips_per_rater: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    n_traps: Mapped[int] = mapped_column(Integer)
    instructions: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CampaignAssetRow(Base):
    __tablename__ = "mos_campaign_assets"

    campaign_id: Mapped[str] = mapped_column(ForeignKey("mos_campaigns.campaign_id"), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    audio_sha256: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(Text, nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    gold_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt: Mapped[str] = mapped_column(Text)


class RaterRow(Base):
    __tablename__ = "mos_raters"
    __table_args__ = (UniqueConstraint("campaign_id", "rater_index", name="uq_mos_rater_index"),)

    rater_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("mos_campaigns.campaign_id"), index=True)
    rater_index: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the token is never stored
    invited_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    screened_out: Mapped[bool] = mapped_column(Boolean, default=False)
    screen_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    screened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ItemRow(Base):
    __tablename__ = "mos_items"
    __table_args__ = (UniqueConstraint("rater_id", "position", name="uq_mos_item_position"),)

    item_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rater_id: Mapped[str] = mapped_column(ForeignKey("mos_raters.rater_id"), index=True)
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    position: Mapped[int] = mapped_column(Integer)
    asset_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8))  # rate | gold | trap
    prompt: Mapped[str] = mapped_column(Text)
    trap_expected: Mapped[float | None] = mapped_column(Float, nullable=True)
    # MUSHRA: the open reference played next to the item
    reference_asset_id: Mapped[str | None] = mapped_column(String(128), nullable=True)


class PlayRow(Base):
    """One byte range of an item's clip that the app sent to the item's rater (an item belongs to one
    rater, so the item id is the rater+clip session). Ranges are appended, never updated, so
    concurrent Range requests need no locking; coverage is merged when a rating arrives."""

    __tablename__ = "mos_plays"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("mos_items.item_id"), index=True)
    start: Mapped[int] = mapped_column(BigInteger)  # first byte sent
    end: Mapped[int] = mapped_column(BigInteger)  # one past the last byte sent
    size: Mapped[int] = mapped_column(BigInteger)  # the whole file's size when it was sent
    served_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RatingRow(Base):
    __tablename__ = "mos_ratings"

    item_id: Mapped[str] = mapped_column(ForeignKey("mos_items.item_id"), primary_key=True)
    rater_id: Mapped[str] = mapped_column(String(40), index=True)
    campaign_id: Mapped[str] = mapped_column(String(40), index=True)
    score: Mapped[float] = mapped_column(Float)
    submission_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())




def make_engine(url: str) -> Engine:
    return database.make_engine(url, "MOS store")


def create_tables(engine: Engine) -> None:
    """Bring the MOS database to the current schema (Alembic upgrade; a no-op when it is there)."""
    migrations.upgrade(engine, "mos")
