"""Provenance database: one row per generated asset and per batch, saying where it came from.

SQLAlchemy ORM so the embedded SQLite default and a PostgreSQL URL run the same code; only portable
column types are used (JSON becomes JSONB on PostgreSQL). SQLite runs in WAL mode with a busy
timeout so the batch runner and the API server can share one file. The cache key is unique, and
`add_asset` turns a lost insert race into "already there", so each request is recorded exactly once.

Ownership: an asset made for an API tenant has a row in `asset_owners` naming the tenant, written in
the same transaction as the asset row (`AssetRecord.tenant`); batch and CLI assets have none. The
API shows an asset only to its tenant (and admin keys); see `musicops.serving.service.Service.can_see`.

Schema: Alembic history `provenance` (musicops/store/migrations/provenance), applied on open.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from musicops.store import migrations
from musicops.store.database import make_engine, new_metadata

_IN_CHUNK = 500  # well under SQLite's bound-parameter limit
BATCH_STATUSES = frozenset({"running", "finished", "failed"})

_Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every backend.

    SQLite has no time zones and hands back naive values; re-attaching UTC here means callers never
    compare naive with aware datetimes. Naive input is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = new_metadata()


class AssetRow(Base):
    __tablename__ = "assets"

    asset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[dict[str, Any]] = mapped_column(_Json)
    prompt: Mapped[str] = mapped_column(Text)
    normalized_prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)  # 64-bit RNG seeds overflow INTEGER on PostgreSQL
    params: Mapped[dict[str, Any]] = mapped_column(_Json)
    model_name: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_uri: Mapped[str] = mapped_column(Text)
    user: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_version: Mapped[str | None] = mapped_column(Text, nullable=True)
    postprocess: Mapped[dict[str, Any]] = mapped_column(_Json)
    loudness_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    loudness_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    true_peak_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(_Json)
    passed: Mapped[bool] = mapped_column(Boolean)
    batch_id: Mapped[str] = mapped_column(String(128), index=True)
    line_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    variation: Mapped[int] = mapped_column(Integer)
    tags: Mapped[Any] = mapped_column(_Json)
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    generation_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    lineage: Mapped[dict[str, Any] | None] = mapped_column(_Json, nullable=True)  # provenance_0005


class BatchRow(Base):
    __tablename__ = "batches"

    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    prompts_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompts_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(_Json)
    user: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_version: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    counts: Mapped[dict[str, Any]] = mapped_column(_Json)


class GateRow(Base):
    """Verdicts of gates run on an asset after it was stored (copyright similarity, MOS, ...).

    A table of its own (not columns on `assets`): verdicts are appended, never change the asset.
    """

    __tablename__ = "asset_gates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[str] = mapped_column(String(128), index=True)
    gate: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    details: Mapped[dict[str, Any]] = mapped_column(_Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AssetOwnerRow(Base):
    """The tenant an asset was made for. A table of its own, like `asset_gates`, written in the same
    transaction as the asset; batch and CLI assets have none."""

    __tablename__ = "asset_owners"

    asset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)


def _json_safe(value: Any) -> Any:
    """Plain JSON with no NaN/inf (PostgreSQL's JSON rejects them; silence measures -inf LUFS)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _json_safe(item())
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class AssetRecord:
    """One generated asset and everything needed to reproduce or audit it."""

    asset_id: str
    cache_key: str
    sha256: str  # the primary (wav) file
    files: dict[str, dict[str, Any]]  # {fmt: {"sha256": ..., "size": ...}}
    prompt: str
    normalized_prompt: str
    seed: int
    params: dict[str, Any]
    model_name: str
    model_uri: str
    batch_id: str
    duration_s: float
    sample_rate: int
    generation_seconds: float
    passed: bool
    model_version: str | None = None
    model_run_id: str | None = None
    user: str | None = None
    code_version: str | None = None
    postprocess: dict[str, Any] = field(default_factory=dict)
    loudness_before: float | None = None
    loudness_after: float | None = None
    true_peak_after: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    line_no: int | None = None
    variation: int = 0
    tags: dict[str, Any] | list[Any] = field(default_factory=dict)
    created_at: datetime | None = None  # set on insert
    tenant: str | None = None  # the API tenant it was made for (asset_owners); None = batch/CLI
    # where it came from beyond the cache key: training data of the model version, template, preset
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view (ISO timestamps, no NaN/inf) for API responses and manifests."""
        return _json_safe(dataclasses.asdict(self))


@dataclass
class BatchRecord:
    """One batch-generation run: its inputs and how it ended."""

    batch_id: str
    status: str
    started_at: datetime
    prompts_file: str | None = None
    prompts_sha256: str | None = None
    model_uri: str | None = None
    model_version: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    code_version: str | None = None
    finished_at: datetime | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(dataclasses.asdict(self))


_ASSET_FIELDS = tuple(f.name for f in dataclasses.fields(AssetRecord) if f.name != "tenant")
_BATCH_FIELDS = tuple(f.name for f in dataclasses.fields(BatchRecord))
_BATCH_START_FIELDS = frozenset(_BATCH_FIELDS) - {"batch_id", "status", "started_at", "finished_at"}
_JSON_ASSET_FIELDS = ("files", "params", "postprocess", "checks", "tags", "lineage")
_NULLABLE_FLOAT_FIELDS = ("loudness_before", "loudness_after", "true_peak_after")


def _asset_row(record: AssetRecord) -> AssetRow:
    values = {name: getattr(record, name) for name in _ASSET_FIELDS}
    for name in _JSON_ASSET_FIELDS:
        values[name] = _json_safe(values[name])
    for name in _NULLABLE_FLOAT_FIELDS:
        values[name] = _finite_or_none(values[name])
    created = values["created_at"] or datetime.now(UTC)
    if created.tzinfo is None:
        raise ValueError(f"AssetRecord.created_at {created!r} is naive: pass a timezone-aware datetime")
    values["created_at"] = created.astimezone(UTC)
    return AssetRow(**values)


def _asset_record(row: AssetRow, tenant: str | None = None) -> AssetRecord:
    values = {name: getattr(row, name) for name in _ASSET_FIELDS}
    values["lineage"] = values["lineage"] or {}  # rows stored before provenance_0005
    return AssetRecord(**values, tenant=tenant)


def _batch_record(row: BatchRow) -> BatchRecord:
    return BatchRecord(**{name: getattr(row, name) for name in _BATCH_FIELDS})


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ProvenanceDB:
    """Asset and batch provenance behind a SQLAlchemy URL; safe to share between threads."""

    def __init__(self, url: str) -> None:
        if not url:
            raise ValueError("ProvenanceDB needs a database URL")
        self.url = url
        self.engine: Engine = make_engine(url, "provenance database")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        migrations.upgrade(self.engine, "provenance")

    @classmethod
    def from_settings(cls, settings: Any) -> ProvenanceDB:
        url = getattr(settings, "database_url", None) or f"sqlite:///{settings.home / 'provenance.db'}"
        return cls(url)

    def __repr__(self) -> str:
        return f"ProvenanceDB({make_url(self.url).render_as_string(hide_password=True)!r})"

    def __enter__(self) -> ProvenanceDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # assets

    def add_asset(self, record: AssetRecord) -> tuple[AssetRecord, bool]:
        """Insert once per cache key: returns (stored record, True) or (the existing one, False)."""
        existing = self.find_by_cache_key(record.cache_key)
        if existing is not None:
            return existing, False
        return self._insert_asset(record)

    def _insert_asset(self, record: AssetRecord) -> tuple[AssetRecord, bool]:
        """The insert itself; a concurrent writer that won the race surfaces as IntegrityError."""
        row = _asset_row(record)
        if record.tenant is not None and not (isinstance(record.tenant, str) and 0 < len(record.tenant) <= 64):
            raise ValueError(f"tenant must be a name of 1-64 characters, got {record.tenant!r}")
        try:
            with self._sessions.begin() as session:
                session.add(row)
                if record.tenant is not None:
                    session.add(AssetOwnerRow(asset_id=record.asset_id, tenant=record.tenant))
        except IntegrityError:
            winner = self.find_by_cache_key(record.cache_key)
            if winner is None:
                raise  # not a cache-key race (e.g. an asset_id reused for another key): a real error
            return winner, False
        return _asset_record(row, record.tenant), True

    @staticmethod
    def _with_owner() -> Any:
        """Asset rows with their tenant (None for batch/CLI assets): one query, no second round trip."""
        return (select(AssetRow, AssetOwnerRow.tenant)
                .outerjoin(AssetOwnerRow, AssetOwnerRow.asset_id == AssetRow.asset_id))

    def get_asset(self, asset_id: str) -> AssetRecord | None:
        with self._sessions() as session:
            found = session.execute(self._with_owner().where(AssetRow.asset_id == asset_id)).first()
            return _asset_record(*found) if found is not None else None

    def find_by_cache_key(self, key: str) -> AssetRecord | None:
        with self._sessions() as session:
            found = session.execute(self._with_owner().where(AssetRow.cache_key == key)).first()
            return _asset_record(*found) if found is not None else None

    def find_by_cache_keys(self, keys: list[str]) -> dict[str, AssetRecord]:
        """Bulk cache lookup for a batch (one IN query per 500 keys); missing keys are simply absent."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, AssetRecord] = {}
        with self._sessions() as session:
            for chunk in _chunks(unique, _IN_CHUNK):
                for row, tenant in session.execute(self._with_owner().where(AssetRow.cache_key.in_(chunk))):
                    found[row.cache_key] = _asset_record(row, tenant)
        return found

    def list_assets(
        self, batch_id: str | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[AssetRecord]:
        """Assets in insertion order (created_at, then id), optionally one batch's, optionally paged."""
        query = self._with_owner().order_by(AssetRow.created_at, AssetRow.asset_id)
        if batch_id is not None:
            query = query.where(AssetRow.batch_id == batch_id)
        if offset:
            query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._sessions() as session:
            return [_asset_record(row, tenant) for row, tenant in session.execute(query)]

    def count_assets(self, batch_id: str | None = None) -> int:
        query = select(func.count()).select_from(AssetRow)
        if batch_id is not None:
            query = query.where(AssetRow.batch_id == batch_id)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    # batches

    def start_batch(self, batch_id: str, **fields: Any) -> BatchRecord:
        """Record a batch as running. Starting an existing id again (a resumed run) updates it in place.

        Accepted fields: prompts_file, prompts_sha256, model_uri, model_version, params, user,
        code_version, counts.
        """
        unknown = set(fields) - _BATCH_START_FIELDS
        if unknown:
            raise TypeError(f"start_batch got unknown fields {sorted(unknown)}; allowed {sorted(_BATCH_START_FIELDS)}")
        for name in ("params", "counts"):
            if name in fields:
                fields[name] = _json_safe(fields[name] or {})
        if "prompts_file" in fields and fields["prompts_file"] is not None:
            fields["prompts_file"] = str(fields["prompts_file"])
        with self._sessions.begin() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                values = {"params": {}, "counts": {}, **fields}
                row = BatchRow(batch_id=batch_id, status="running", started_at=datetime.now(UTC), **values)
                session.add(row)
            else:
                for name, value in fields.items():
                    setattr(row, name, value)
                row.status = "running"
                row.finished_at = None
        return _batch_record(row)

    def finish_batch(self, batch_id: str, status: str, counts: dict[str, Any]) -> BatchRecord:
        """Close a batch as "finished" or "failed" with its final counts."""
        if status not in BATCH_STATUSES - {"running"}:
            raise ValueError(f"finish_batch status must be 'finished' or 'failed', got {status!r}")
        with self._sessions.begin() as session:
            row = session.get(BatchRow, batch_id)
            if row is None:
                raise KeyError(f"no batch {batch_id!r}; call start_batch first")
            row.status = status
            row.counts = _json_safe(counts or {})
            row.finished_at = datetime.now(UTC)
        return _batch_record(row)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._sessions() as session:
            row = session.get(BatchRow, batch_id)
            return _batch_record(row) if row is not None else None

    # gates

    def record_gate(self, asset_id: str, gate: str, passed: bool, details: dict[str, Any]) -> None:
        """Append a gate verdict to an asset's provenance (earlier verdicts are kept)."""
        if self.get_asset(asset_id) is None:
            raise KeyError(f"no asset {asset_id!r}")
        with self._sessions.begin() as session:
            session.add(GateRow(asset_id=asset_id, gate=gate, passed=bool(passed), details=_json_safe(details),
                                created_at=datetime.now(UTC)))

    def gates_for(self, asset_id: str) -> list[dict[str, Any]]:
        with self._sessions() as session:
            rows = session.scalars(select(GateRow).where(GateRow.asset_id == asset_id).order_by(GateRow.id))
            return [{"gate": r.gate, "passed": r.passed, "details": r.details, "created_at": r.created_at.isoformat()}
                    for r in rows]

    def close(self) -> None:
        """Release pooled connections (and SQLite file handles)."""
        self.engine.dispose()
