"""Durable asynchronous jobs: a SQLite table of its own (`<state>/serve/jobs.db`) and a dispatcher.

State machine: queued -> running -> succeeded | failed. A job row is inserted (committed) before
the client gets its 202, so an accepted job is never lost. The dispatcher claims queued jobs
(queued -> running, one transaction) and hands them to the engine's batcher; completion is one
conditional UPDATE (`WHERE state = 'running'`), so a job completes exactly once. After a crash
(SIGKILL included) the next start puts every `running` row back to `queued` and runs it again:
assets already stored are cache hits (the cache key is unique in provenance), so the rerun creates
only the missing ones and no asset is made twice. One server process owns a jobs database.

Webhooks: on completion the job's URL (its host must be in the server's allow-list) gets one POST
with the job as JSON and an `X-Musicops-Signature: sha256=<hmac>` header; delivery is retried a few
times and, being after the completion commit, is at-least-once across crashes (the job id is the
idempotency key).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import JSON, Float, Integer, String, Text, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from musicops.serving.keys import sqlite_engine
from musicops.store.provenance import UTCDateTime

log = logging.getLogger(__name__)
STATES = ("queued", "running", "succeeded", "failed")
MAX_ATTEMPTS = 3


class _Base(DeclarativeBase):
    pass


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


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


def _job(row: JobRow) -> Job:
    return Job(**{name: getattr(row, name) for name in Job.__dataclass_fields__})


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.engine = sqlite_engine(self.path)
        _Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock = threading.Lock()

    @classmethod
    def for_home(cls, home: Path) -> JobStore:
        return cls(Path(home) / "serve" / "jobs.db")

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

    def requeue_running(self) -> int:
        """At start: jobs a previous process was running go back to the queue (it died)."""
        with self._lock, self._sessions.begin() as session:
            result = session.execute(update(JobRow).where(JobRow.state == "running")
                                     .values(state="queued", done=0))
            return result.rowcount

    def claim(self, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        with self._lock, self._sessions.begin() as session:
            rows = list(session.scalars(select(JobRow).where(JobRow.state == "queued")
                                        .order_by(JobRow.created_at, JobRow.job_id).limit(limit)))
            now = datetime.now(UTC)
            for row in rows:
                row.state, row.attempts = "running", row.attempts + 1
                row.started_at = row.started_at or now
            return [_job(r) for r in rows]

    def progress(self, job_id: str, done: int) -> None:
        with self._sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.job_id == job_id, JobRow.state == "running")
                            .values(done=done))

    def complete(self, job_id: str, result: dict[str, Any]) -> bool:
        """running -> succeeded, once: False when the job was not running (already completed)."""
        with self._lock, self._sessions.begin() as session:
            changed = session.execute(
                update(JobRow).where(JobRow.job_id == job_id, JobRow.state == "running")
                .values(state="succeeded", result=result, done=JobRow.total, finished_at=datetime.now(UTC),
                        completions=JobRow.completions + 1)).rowcount
            return changed == 1

    def fail(self, job_id: str, error: str, retry: bool) -> str:
        """running -> queued again (retry) or failed. Returns the new state."""
        with self._lock, self._sessions.begin() as session:
            row = session.get(JobRow, job_id)
            if row is None or row.state != "running":
                return row.state if row else "missing"
            if retry and row.attempts < MAX_ATTEMPTS:
                row.state, row.done = "queued", 0
            else:
                row.state, row.error, row.finished_at = "failed", error, datetime.now(UTC)
            return row.state

    def set_webhook_state(self, job_id: str, state: str) -> None:
        with self._sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.job_id == job_id).values(webhook_state=state))

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

    def items_ahead(self, job: Job) -> int:
        """Clips of queued jobs created before this one (for the ETA)."""
        with self._sessions() as session:
            return int(session.scalar(select(func.coalesce(func.sum(JobRow.total - JobRow.done), 0))
                                      .where(JobRow.state == "queued", JobRow.created_at < job.created_at)) or 0)


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
        self.resumed = self.store.requeue_running()
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
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._dispatch()
            except Exception:
                log.exception("job dispatch failed")
            self._wake.wait(0.5)

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
        body = json.dumps({"job_id": job.job_id, "state": job.state, "result": job.result, "error": job.error},
                          sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "musicops-webhook/1",
                   "X-Musicops-Job": job.job_id, "X-Musicops-Signature": self.signer.webhook_signature(body)}
        for attempt in range(attempts):
            try:
                request = urllib.request.Request(job.webhook_url or "", data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - host allow-listed
                    if 200 <= response.status < 300:
                        self.store.set_webhook_state(job.job_id, "delivered")
                        return
            except Exception as exc:
                log.warning("webhook for job %s failed (attempt %d): %s", job.job_id, attempt + 1,
                            type(exc).__name__)
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
        if self.metrics:
            self.metrics.error("webhook")
        self.store.set_webhook_state(job.job_id, "failed")
