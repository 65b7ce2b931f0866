"""API keys (stored hashed), per-key rate limits and daily generated-minutes quotas.

A key looks like `mko_<key id>_<secret>`. Only the key id, a random per-key salt and
sha256(salt || secret) are stored (`<state>/serve/keys.db`), so the database cannot be used to call
the API; the key is printed once by `musicops keys create`. Verification is constant time.

Rate limits are token buckets (R requests per minute, burst R): in the server process with the
embedded SQLite store, in the database when replicas share one (`SharedRateLimiter`).
Quotas are audio minutes per UTC day, reserved atomically in the database before any work starts
(cache hits count: the quota meters delivered audio) and refunded when generation fails; with
`MUSICOPS_SERVING_DATABASE_URL` (PostgreSQL) every replica draws on the same quota.

Tenancy: every key belongs to a tenant (`--tenant`, default: the key's own name, so keys made
without one are isolated from each other). Assets, audit records and jobs are visible only to keys
of the tenant they were made for; a key with the admin scope (`--admin`) sees every tenant's.
Key databases made before tenants existed gain the `tenant` and `admin` columns on open (Alembic
history `keys`, musicops/store/migrations/keys); their keys read as tenant = own name, not admin.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Boolean, Float, String, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from musicops.config import Settings
from musicops.store import migrations
from musicops.store.database import is_sqlite, make_engine, new_metadata, rows_changed
from musicops.store.provenance import UTCDateTime

KEY_PREFIX = "mko"
_KEY = re.compile(r"^mko_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER_MINUTE = {"s": 60.0, "sec": 60.0, "second": 60.0, "m": 1.0, "min": 1.0, "minute": 1.0,
               "h": 1 / 60, "hour": 1 / 60, None: 1.0}


class _Base(DeclarativeBase):
    metadata = new_metadata()  # schema: Alembic history `keys` (musicops/store/migrations/keys)


class ApiKeyRow(_Base):
    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    quota_minutes_per_day: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_per_min: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: the key's own name
    admin: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: not admin



class RateBucketRow(_Base):
    """A key's token bucket when replicas share the serving database (wall-clock seconds)."""

    __tablename__ = "rate_buckets"

    key_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated: Mapped[float] = mapped_column(Float)


class UsageRow(_Base):
    __tablename__ = "usage"

    key_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # UTC date, ISO
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    quota_minutes_per_day: float | None
    rate_per_min: float | None
    created_at: datetime
    revoked: bool = False
    tenant: str | None = None  # None only for ANONYMOUS (--no-auth): batch/CLI cache, sees everything
    admin: bool = False

    @property
    def user(self) -> str:
        return f"key:{self.name}"


# --no-auth: one local user, no one to isolate from. Its tenant is None, so it shares the batch/CLI
# cache (the keys used before tenants existed), and it may read every asset.
ANONYMOUS = ApiKey("000000000000", "anonymous", None, None, datetime(1970, 1, 1, tzinfo=UTC), admin=True)


def parse_rate(text: str | None) -> float | None:
    """'30/min', '2/s', '100/h' or '30' (per minute) -> requests per minute; None/'' = unlimited."""
    if text is None or not str(text).strip():
        return None
    match = _RATE.match(str(text).lower())
    if not match:
        raise ValueError(f"invalid rate {text!r}: use N/min, N/s or N/h")
    per_minute = float(match[1]) * _PER_MINUTE[match[2]]
    if per_minute <= 0:
        raise ValueError("rate must be > 0")
    return per_minute


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def serving_database_url(settings: Settings, file_name: str) -> str:
    """`MUSICOPS_SERVING_DATABASE_URL` (keys and jobs share it: several replicas, one database),
    else the embedded SQLite file `<state>/serve/<file_name>`."""
    return settings.serving_database(file_name)


def as_url(location: str | Path) -> str:
    """A SQLAlchemy URL, or a file path taken as a SQLite file."""
    text = str(location)
    return text if "://" in text else f"sqlite:///{Path(text)}"


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).date().isoformat()


def seconds_to_next_day(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


class KeyStore:
    """Keys and daily usage (`<state>/serve/keys.db` or the serving database URL); thread-safe."""

    CACHE_S = 5.0  # verified key rows are reused this long (a revocation takes effect within it)

    def __init__(self, location: str | Path) -> None:
        self.url = as_url(location)
        self.engine = make_engine(self.url, "API key store")
        migrations.upgrade(self.engine, "keys")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ApiKeyRow | None]] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> KeyStore:
        return cls(serving_database_url(settings, "keys.db"))

    def close(self) -> None:
        self.engine.dispose()

    # management (CLI)

    def create(self, name: str, quota_minutes: float | None = None, rate: str | float | None = None,
               tenant: str | None = None, admin: bool = False) -> tuple[ApiKey, str]:
        """Create a key; returns (key, the plaintext key). The plaintext is not stored anywhere.
        `tenant` defaults to the key's name (a tenant of its own); `admin` sees every tenant's assets."""
        if not _NAME.match(name or ""):
            raise ValueError(f"invalid key name {name!r}: letters, digits, '.', '_' or '-' (max 64)")
        if name == ANONYMOUS.name:
            raise ValueError(f"the key name {name!r} is reserved (it is the user of --no-auth servers)")
        if tenant is not None and not _NAME.match(tenant):
            raise ValueError(f"invalid tenant {tenant!r}: letters, digits, '.', '_' or '-' (max 64)")
        if quota_minutes is not None and quota_minutes <= 0:
            raise ValueError("quota minutes must be > 0")
        per_min = rate if isinstance(rate, float | int) or rate is None else parse_rate(rate)
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        row = ApiKeyRow(key_id=key_id, name=name, salt=salt, digest=_digest(salt, secret),
                        quota_minutes_per_day=quota_minutes, rate_per_min=float(per_min) if per_min else None,
                        created_at=datetime.now(UTC), tenant=tenant or name, admin=bool(admin))
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise ValueError(f"a key named {name!r} already exists") from None
        return _key(row), f"{KEY_PREFIX}_{key_id}_{secret}"

    def all(self) -> list[ApiKey]:
        with self._sessions() as session:
            return [_key(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))]

    def revoke(self, name: str) -> bool:
        with self._sessions.begin() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.name == name)).one_or_none()
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = datetime.now(UTC)
        self._cache.clear()
        return True

    # request path

    def verify(self, presented: str | None) -> ApiKey | None:
        """The key a request presented, or None when it is malformed, unknown, wrong or revoked."""
        match = _KEY.match(presented or "")
        if not match:
            return None
        key_id, secret = match[1], match[2]
        row = self._row(key_id)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(_digest(row.salt, secret), row.digest):
            return None
        return _key(row)

    def by_id(self, key_id: str) -> ApiKey | None:
        """The key with this id (revoked ones too: a job keeps its tenant), or None."""
        row = self._row(key_id)
        return _key(row) if row is not None else None

    def _row(self, key_id: str) -> ApiKeyRow | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[0] > self.CACHE_S:
            with self._sessions() as session:
                row = session.get(ApiKeyRow, key_id)
            cached = (now, row)
            self._cache[key_id] = cached
        return cached[1]

    def used_seconds(self, key_id: str, day: str | None = None) -> float:
        with self._sessions() as session:
            row = session.get(UsageRow, (key_id, day or utc_day()))
            return float(row.seconds) if row else 0.0

    def reserve(self, key: ApiKey, seconds: float, day: str | None = None) -> tuple[bool, float]:
        """Add `seconds` of audio to today's usage unless that would pass the quota.

        Returns (granted, seconds used today after the call). One conditional UPDATE, so two
        requests racing for the last minutes cannot both get them.
        """
        day = day or utc_day()
        if key.quota_minutes_per_day is None:
            return True, 0.0
        limit = key.quota_minutes_per_day * 60.0
        with self._lock:
            self._ensure_usage_row(key.key_id, day)
        with self._lock, self._sessions.begin() as session:
            changed = rows_changed(
                session, update(UsageRow).where(UsageRow.key_id == key.key_id, UsageRow.day == day,
                                                UsageRow.seconds + seconds <= limit + 1e-9)
                .values(seconds=UsageRow.seconds + seconds))
            usage = session.get(UsageRow, (key.key_id, day), populate_existing=True)
            if usage is None:  # created just above under the lock; only a concurrent purge could drop it
                raise RuntimeError(f"usage row for key {key.key_id} on {day} vanished")
            return changed == 1, float(usage.seconds)

    def rate_limiter(self) -> RateLimiter | SharedRateLimiter:
        """In-process buckets for the embedded SQLite store (one replica); buckets in the database
        when replicas share a server database, so a key's rate holds across all of them."""
        return RateLimiter() if is_sqlite(self.url) else SharedRateLimiter(self)

    def _ensure_usage_row(self, key_id: str, day: str) -> None:
        """Today's usage row exists; another replica inserting it at the same moment is fine."""
        with self._sessions() as session:
            if session.get(UsageRow, (key_id, day)) is not None:
                return
        try:
            with self._sessions.begin() as session:
                session.add(UsageRow(key_id=key_id, day=day, seconds=0.0))
        except IntegrityError:
            pass  # the other writer's row is the same empty row

    def refund(self, key: ApiKey, seconds: float, day: str | None = None) -> None:
        if key.quota_minutes_per_day is None or seconds <= 0:
            return
        with self._lock, self._sessions.begin() as session:
            session.execute(update(UsageRow).where(UsageRow.key_id == key.key_id, UsageRow.day == (day or utc_day()))
                            .values(seconds=UsageRow.seconds - seconds))


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.key_id, row.name, row.quota_minutes_per_day, row.rate_per_min, row.created_at,
                  row.revoked_at is not None, row.tenant or row.name, bool(row.admin))


class RateLimiter:
    """Token bucket per key: `rate_per_min` tokens a minute, burst of the same size (at least 1)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, last refill)
        self._lock = threading.Lock()

    def acquire(self, key: ApiKey, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until a token is available."""
        if key.rate_per_min is None:
            return 0.0
        now = time.monotonic() if now is None else now
        capacity = max(1.0, key.rate_per_min)
        per_second = key.rate_per_min / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key.key_id, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * per_second)
            if tokens >= 1.0:
                self._buckets[key.key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key.key_id] = (tokens, now)
            return (1.0 - tokens) / per_second


class SharedRateLimiter:
    """The same token bucket as `RateLimiter`, kept in the serving database: one conditional UPDATE
    per request takes a token, so replicas sharing the database share each key's rate."""

    def __init__(self, store: KeyStore) -> None:
        self._sessions = store._sessions

    def acquire(self, key: ApiKey, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until a token is available."""
        if key.rate_per_min is None:
            return 0.0
        now = time.time() if now is None else now  # wall clock: comparable across replicas
        capacity = max(1.0, key.rate_per_min)
        per_second = key.rate_per_min / 60.0
        # a clock behind the last update (another replica's) refills nothing rather than draining
        elapsed = case((RateBucketRow.updated < now, now - RateBucketRow.updated), else_=0.0)
        refilled = RateBucketRow.tokens + elapsed * per_second
        available = case((refilled > capacity, capacity), else_=refilled)
        take = (update(RateBucketRow).where(RateBucketRow.key_id == key.key_id, available >= 1.0)
                .values(tokens=available - 1.0,
                        updated=case((RateBucketRow.updated < now, now), else_=RateBucketRow.updated)))
        # The common case is one UPDATE. A key's first request creates its bucket; a bucket another
        # replica created or refilled between our UPDATE and our read is simply tried again.
        for _ in range(5):
            with self._sessions.begin() as session:
                if rows_changed(session, take) == 1:
                    return 0.0
                row = session.get(RateBucketRow, key.key_id)
            if row is None:
                self._create_bucket(key.key_id, capacity, now)
                continue
            tokens = min(capacity, row.tokens + max(0.0, now - row.updated) * per_second)
            if tokens < 1.0:
                return (1.0 - tokens) / per_second
        return 1.0 / per_second  # still contended: refuse for one token's time rather than over-grant

    def _create_bucket(self, key_id: str, capacity: float, now: float) -> None:
        try:
            with self._sessions.begin() as session:
                session.add(RateBucketRow(key_id=key_id, tokens=capacity, updated=now))
        except IntegrityError:
            pass  # another replica made the (identical, full) bucket first
