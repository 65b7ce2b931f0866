"""Durable asynchronous jobs: a table of their own and a dispatcher per server process.

The table lives in `<state>/serve/jobs.db` (SQLite, one server process) or in the database named
by `MUSICOPS_SERVING_DATABASE_URL` (PostgreSQL: several replicas share one queue).

State machine: queued -> running -> succeeded | failed. A job row is inserted (committed) before
the client gets its 202, so an accepted job is never lost. A replica claims a queued job with one
conditional UPDATE (`WHERE state = 'queued'`), so two replicas never both claim it, and holds it
under a lease it renews while the job runs. Completion is one conditional UPDATE on the claiming
replica (`WHERE state = 'running' AND owner = me`), so a job completes exactly once. A replica
that dies (SIGKILL included) stops renewing: once its leases expire any replica puts those jobs
back in the queue and runs them again (a restarted replica with the same id does so at start);
assets already stored are cache hits (the cache key is unique in provenance), so the rerun creates
only the missing ones and no asset is made twice.

Webhooks: on completion the job's URL (its host must be in the server's allow-list) gets one POST
with the job as JSON and an `X-Musicops-Signature: sha256=<hmac>` header; delivery is retried a few
times and, being after the completion commit, is at-least-once across crashes (the job id is the
idempotency key). Redirects are never followed (the signed body would go to a host nobody allowed):
a 3xx is a failed delivery, recorded with its reason in `webhook_error`.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import JSON, Float, Integer, String, Text, func, or_, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from musicops.config import Settings, get_settings
from musicops.serving.keys import as_url, serving_database_url
from musicops.store import migrations
from musicops.store.database import is_sqlite, make_engine, new_metadata, rows_changed
from musicops.store.provenance import UTCDateTime

log = logging.getLogger(__name__)
STATES = ("queued", "running", "succeeded", "failed")
MAX_ATTEMPTS = 3
LOCAL_REPLICA = "local"  # the embedded SQLite queue has one owner: whichever process runs on it


class _Base(DeclarativeBase):
    metadata = new_metadata()  # schema: Alembic history `jobs` (musicops/store/migrations/jobs)


class JobRow(_Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    key_id: Mapped[str] = mapped_column(String(12), index=True)
    user: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    completions: Mapped[int] = mapped_column(Integer, default=0)
    reserved_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_state: Mapped[str] = mapped_column(String(16), default="none")
    webhook_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why delivery failed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)



@dataclass(frozen=True)
class Job:
    job_id: str
    state: str
    key_id: str
    user: str
    request: dict[str, Any]
    total: int
    done: int
    attempts: int
    completions: int
    reserved_seconds: float
    result: dict[str, Any] | None
    error: str | None
    webhook_url: str | None
    webhook_state: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None = None
    lease_until: datetime | None = None
    webhook_error: str | None = None


def _job(row: JobRow) -> Job:
    return Job(**{name: getattr(row, name) for name in Job.__dataclass_fields__})


def replica_id(url: str, port: int | None = None, settings: Settings | None = None) -> str:
    """Who claims jobs: `MUSICOPS_REPLICA_ID`, else host:port on a shared database, else 'local'."""
    configured = (settings or get_settings()).replica_id
    if configured:
        return configured
    if is_sqlite(url):
        return LOCAL_REPLICA
    return f"{socket.gethostname()}:{port or 0}"


def lease_seconds(settings: Settings | None = None) -> float:
    """How long a claimed job stays claimed without a heartbeat (`MUSICOPS_JOB_LEASE_S`, 0.5-3600)."""
    return (settings or get_settings()).job_lease_s


class JobStore:
    def __init__(self, location: str | Path, replica: str | None = None, lease_s: float | None = None) -> None:
        self.url = as_url(location)
        self.engine = make_engine(self.url, "job queue")
        migrations.upgrade(self.engine, "jobs")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.Lock()
        self.replica = replica or replica_id(self.url)
        self.lease = timedelta(seconds=lease_s if lease_s is not None else lease_seconds())

    @classmethod
    def for_settings(cls, settings: Settings, port: int | None = None) -> JobStore:
        url = serving_database_url(settings, "jobs.db")
        return cls(url, replica=replica_id(url, port, settings), lease_s=lease_seconds(settings))

    def close(self) -> None:
        self.engine.dispose()

    def add(self, key_id: str, user: str, request: dict[str, Any], total: int, reserved_seconds: float,
            webhook_url: str | None) -> Job:
        row = JobRow(job_id=f"j_{uuid.uuid4().hex}", state="queued", key_id=key_id, user=user, request=request,
                     total=total, done=0, attempts=0, completions=0, reserved_seconds=reserved_seconds,
                     webhook_url=webhook_url, webhook_state="pending" if webhook_url else "none",
                     created_at=datetime.now(UTC))
        with self._sessions.begin() as session:
            session.add(row)
        return _job(row)

    def get(self, job_id: str) -> Job | None:
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            return _job(row) if row is not None else None

    def recover(self, at_start: bool = False) -> int:
        """Put back in the queue the running jobs whose replica stopped renewing their lease (and, at
        start, the ones this replica id was running before it restarted). Returns how many."""
        stale = or_(JobRow.lease_until.is_(None), JobRow.lease_until < datetime.now(UTC))
        if at_start:
            stale = or_(stale, JobRow.owner == self.replica)
        with self._lock, self._sessions.begin() as session:
            return rows_changed(session, update(JobRow).where(JobRow.state == "running", stale)
                                .values(state="queued", done=0, owner=None, lease_until=None))

    def claim(self, limit: int) -> list[Job]:
        """Claim up to `limit` queued jobs, oldest first; a job another replica claimed first is skipped."""
        if limit <= 0:
            return []
        with self._lock:
            with self._sessions() as session:
                candidates = list(session.scalars(select(JobRow.job_id).where(JobRow.state == "queued")
                                                  .order_by(JobRow.created_at, JobRow.job_id).limit(2 * limit)))
            claimed: list[str] = []
            for job_id in candidates:
                if len(claimed) == limit:
                    break
                now = datetime.now(UTC)
                with self._sessions.begin() as session:
                    won = rows_changed(
                        session, update(JobRow).where(JobRow.job_id == job_id, JobRow.state == "queued")
                        .values(state="running", owner=self.replica, lease_until=now + self.lease,
                                attempts=JobRow.attempts + 1, started_at=func.coalesce(JobRow.started_at, now))
                    ) == 1
                if won:
                    claimed.append(job_id)
        return [job for job in (self.get(job_id) for job_id in claimed) if job is not None]

    def renew(self, job_ids: list[str]) -> int:
        """Extend this replica's leases on the jobs it is still running."""
        if not job_ids:
            return 0
        with self._sessions.begin() as session:
            return rows_changed(session, update(JobRow).where(JobRow.job_id.in_(job_ids), JobRow.state == "running",
                                                              JobRow.owner == self.replica)
                                .values(lease_until=datetime.now(UTC) + self.lease))

    def progress(self, job_id: str, done: int) -> None:
        with self._sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.job_id == job_id, JobRow.state == "running",
                                                 JobRow.owner == self.replica).values(done=done))

    def complete(self, job_id: str, result: dict[str, Any]) -> bool:
        """running -> succeeded, once: False when this replica no longer holds the job (completed, or
        its lease expired and another replica took it over)."""
        with self._lock, self._sessions.begin() as session:
            changed = rows_changed(
                session,
                update(JobRow).where(JobRow.job_id == job_id, JobRow.state == "running", JobRow.owner == self.replica)
                .values(state="succeeded", result=result, done=JobRow.total, finished_at=datetime.now(UTC),
                        completions=JobRow.completions + 1, lease_until=None))
            return changed == 1

    def fail(self, job_id: str, error: str, retry: bool) -> str:
        """running -> queued again (retry) or failed. Returns the new state."""
        with self._lock, self._sessions.begin() as session:
            row = session.get(JobRow, job_id, with_for_update=not is_sqlite(self.url))
            if row is None or row.state != "running" or row.owner != self.replica:
                return row.state if row else "missing"
            if retry and row.attempts < MAX_ATTEMPTS:
                row.state, row.done, row.owner, row.lease_until = "queued", 0, None, None
            else:
                row.state, row.error, row.finished_at, row.lease_until = "failed", error, datetime.now(UTC), None
            return row.state

    def set_webhook_state(self, job_id: str, state: str, error: str | None = None) -> None:
        with self._sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.job_id == job_id)
                            .values(webhook_state=state, webhook_error=error))

    def pending_webhooks(self) -> list[Job]:
        with self._sessions() as session:
            rows = session.scalars(select(JobRow).where(JobRow.state.in_(("succeeded", "failed")),
                                                        JobRow.webhook_state == "pending"))
            return [_job(r) for r in rows]

    def count(self, state: str | None = None) -> int:
        query = select(func.count()).select_from(JobRow)
        if state:
            query = query.where(JobRow.state == state)
        with self._sessions() as session:
            return int(session.scalar(query) or 0)

    def audio_seconds_ahead(self, job: Job) -> float:
        """Seconds of audio still to generate for queued jobs created before this one (for the ETA):
        each job's reserved seconds, pro rata of its clips not yet done."""
        remaining = JobRow.reserved_seconds * (JobRow.total - JobRow.done) / func.nullif(JobRow.total, 0)
        with self._sessions() as session:
            return float(session.scalar(select(func.coalesce(func.sum(remaining), 0.0))
                                        .where(JobRow.state == "queued", JobRow.created_at < job.created_at)) or 0.0)


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """http(s) URL whose host (or host:port) is on the allow-list; no credentials in the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    host = parts.hostname.lower()
    for entry in allowed:
        entry = entry.lower().strip()
        if entry == host or (port is not None and entry == f"{host}:{port}"):
            return True
    return False




class JobRunner:
    """Feeds queued jobs to the engine, records progress and completion, sends webhooks."""

    def __init__(self, store: JobStore, engine: Any, build_plan: Any, render: Any, signer: Any,
                 concurrency: int = 16, metrics: Any = None, on_failure: Any = None) -> None:
        self.store = store
        self.engine = engine
        self.build_plan = build_plan  # Job -> BatchPlan (on the model in service)
        self.render = render  # (Job, outcomes) -> result dict stored with the job
        self.signer = signer
        self.concurrency = concurrency
        self.metrics = metrics
        self.on_failure = on_failure  # Job -> None (quota refund)
        self._inflight: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resumed = 0

    def start(self) -> None:
        self.resumed = self.store.recover(at_start=True)
        if self.resumed:
            log.warning("resuming %d job(s) left running by a previous process", self.resumed)
        self._thread = threading.Thread(target=self._run, name="job-dispatcher", daemon=True)
        self._thread.start()
        for job in self.store.pending_webhooks():
            self._webhook_async(job)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def wake(self) -> None:
        self._wake.set()

    def queued(self) -> int:
        return self.store.count("queued")

    def _run(self) -> None:
        upkeep_every = self.store.lease.total_seconds() / 3
        last_upkeep = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if time.monotonic() - last_upkeep >= upkeep_every:
                    last_upkeep = time.monotonic()
                    self._upkeep()
                self._dispatch()
            except Exception:
                log.exception("job dispatch failed")
            self._wake.wait(min(0.5, upkeep_every))

    def _upkeep(self) -> None:
        """Renew the leases of this replica's running jobs; requeue jobs of replicas that died."""
        with self._lock:
            inflight = list(self._inflight)
        self.store.renew(inflight)
        recovered = self.store.recover()
        if recovered:
            log.warning("requeued %d job(s) whose replica stopped renewing its lease", recovered)

    def _dispatch(self) -> None:
        if not self.engine.manager.ready:
            return
        with self._lock:
            free = self.concurrency - len(self._inflight)
        for job in self.store.claim(free):
            if self.metrics:
                self.metrics.jobs.labels("running").inc()
            try:
                plan = self.build_plan(job)
            except Exception as exc:
                log.exception("job %s cannot be planned", job.job_id)
                self._failed(job, f"{type(exc).__name__}", retry=False)
                continue
            with self._lock:
                self._inflight.add(job.job_id)
            future = self.engine.submit(plan, on_progress=lambda done, total, j=job.job_id: self.store.progress(j, done))
            future.add_done_callback(lambda f, j=job: self._finished(j, f))

    def _finished(self, job: Job, future: Any) -> None:
        try:
            exc = future.exception()
            if exc is not None:
                self._failed(job, str(exc), retry=True)
            elif self.store.complete(job.job_id, self.render(job, future.result())):
                if self.metrics:
                    self.metrics.jobs.labels("succeeded").inc()
                final = self.store.get(job.job_id)
                if final and final.webhook_url:
                    self._webhook_async(final)
        except Exception:
            log.exception("recording completion of job %s failed", job.job_id)
        finally:
            with self._lock:
                self._inflight.discard(job.job_id)
            self._wake.set()

    def _failed(self, job: Job, error: str, retry: bool) -> None:
        state = self.store.fail(job.job_id, error, retry)
        if self.metrics:
            self.metrics.jobs.labels(state).inc()
        if state == "failed":
            if self.on_failure:
                self.on_failure(job)
            final = self.store.get(job.job_id)
            if final and final.webhook_url:
                self._webhook_async(final)

    # webhooks

    def _webhook_async(self, job: Job) -> None:
        threading.Thread(target=self._deliver, args=(job,), name=f"webhook-{job.job_id}", daemon=True).start()

    def _deliver(self, job: Job, attempts: int = 4) -> None:
        """POST the job to its webhook URL, never following a redirect (the signature and body go to
        the allow-listed URL only); retried with backoff, except a 3xx: the same answer would come."""
        body = json.dumps({"job_id": job.job_id, "state": job.state, "result": job.result, "error": job.error},
                          sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "musicops-webhook/1",
                   "X-Musicops-Job": job.job_id, "X-Musicops-Signature": self.signer.webhook_signature(body)}
        import httpx

        reason = "not attempted"
        # follow_redirects=False (httpx's default, stated): a 3xx is an answer, never a second request.
        with httpx.Client(follow_redirects=False, timeout=10) as client:
            for attempt in range(attempts):
                try:
                    response = client.post(job.webhook_url or "", content=body, headers=headers)  # host allow-listed
                    if response.is_success:
                        self.store.set_webhook_state(job.job_id, "delivered")
                        return
                    if response.is_redirect or 300 <= response.status_code < 400:
                        reason = (f"redirect (HTTP {response.status_code}) not followed; "
                                  "webhooks must answer 2xx themselves")
                        log.warning("webhook for job %s: %s", job.job_id, reason)
                        break
                    reason = f"HTTP {response.status_code}"
                except Exception as exc:  # noqa: BLE001 - any failure (bad URL, refused, timeout) is a failed delivery
                    reason = type(exc).__name__
                log.warning("webhook for job %s failed (attempt %d): %s", job.job_id, attempt + 1, reason)
                if attempt + 1 < attempts:
                    time.sleep(min(8.0, 0.5 * 2 ** attempt))
        if self.metrics:
            self.metrics.error("webhook")
        self.store.set_webhook_state(job.job_id, "failed", reason)
