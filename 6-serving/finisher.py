"""Finishing clips (post-processing + storing, `process_clip` + `store_clip`, unchanged) off the
model thread: the one home for both sides of it.

Parent side (`Finisher`, used by the engine): one finisher thread takes generated clips in order
and finishes each in a pool of `processes` worker processes, or itself when that is 0. On small
CPUs the tiny model's generation loop is mostly Python, so finishing clips on a thread of the same
process competes with it for the GIL; a worker process runs them on another core. If a worker
dies (killed, out of memory), the pool is broken for every clip in it: the finisher thread builds a
new pool and resubmits those clips (up to `MAX_FINISH_ATTEMPTS` times each, so a clip that kills
its worker every time cannot keep breaking the pool). Pools are created and fed only from the
finisher thread, which lives until `close`: a worker's PR_SET_PDEATHSIG follows the thread that
started it.

Worker side (`init_worker`, `finish_clip`, run in the spawned processes): each worker opens its own
asset store and provenance DB once (SQLite WAL is multi-process safe; the cache-key constraint
keeps assets exactly-once whichever process writes).

Isolation: a clip's failure comes back as a `FinishError` (plain text, always picklable), so it
fails only its own request. An exception class that cannot be rebuilt from its args (AudioError
takes two) would fail to unpickle in the server and break the pool, failing every clip in flight.
A worker dies with the server: PR_SET_PDEATHSIG on Linux, and a parent-pid watchdog everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicops.generation.delivery import process_clip, store_clip
from musicops.generation.planning import BatchPlan

log = logging.getLogger(__name__)
_worker: dict[str, Any] = {}
_PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 0.5
MAX_FINISH_ATTEMPTS = 3  # pools a clip may be sent to when workers keep dying under it
Stored = tuple[Any, bool, bool]  # store_clip's (record, created, identical)
OnDone = Callable[[Stored | None, BaseException | None], None]  # exactly one of the two is None


class FinishError(Exception):
    """A worker's failure as text: the original type's name and message (picklable by construction)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def die_with_parent(parent_pid: int) -> None:
    """Exit when `parent_pid` is gone, so a SIGKILLed server leaves no worker behind.

    PR_SET_PDEATHSIG makes the kernel send SIGKILL when the parent (strictly: the parent's thread
    that forked us) ends; the watchdog thread covers other systems and the window before prctl.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog still applies
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def init_worker(settings: Any, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    from musicops.generation.planning import BatchOptions
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    _worker["store"] = open_asset_store(settings)
    _worker["db"] = ProvenanceDB.from_settings(settings)
    # Warm the post-processing caches (filters, interpolation matrices) before the first request.
    rng = np.random.default_rng(0)
    process_clip((0.1 * rng.standard_normal((32_000, 1))).astype(np.float32), 32_000, 1.0, BatchOptions())


def ping() -> bool:
    return True


def one_item_plan(plan: BatchPlan, index: int) -> BatchPlan:
    """The slice of a plan `store_clip` needs for one item (small to send to a worker)."""
    return BatchPlan(plan.batch_id, plan.prompts_file, plan.prompts_sha256, plan.model, plan.model_id,
                     [plan.items[index]], [plan.keys[index]], {}, plan.options)


def finish_clip(plan: BatchPlan, clip: np.ndarray, sample_rate: int, seconds: float) -> tuple[Any, bool, bool]:
    try:
        processed = process_clip(clip, sample_rate, plan.items[0].duration_s, plan.options)
        return store_clip(plan, 0, processed, seconds, _worker["store"], _worker["db"])
    except Exception as exc:
        raise FinishError(type(exc).__name__, str(exc)[:2000]) from None


# --- parent side -----------------------------------------------------------------------------------


@dataclass
class FinishWork:
    """One generated clip on its way to post-processing and the store."""

    plan: BatchPlan
    index: int  # the clip's item in `plan`
    clip: np.ndarray
    sample_rate: int
    seconds: float  # model seconds spent on this clip (recorded with the asset)
    abandoned: Callable[[], bool] = lambda: False  # true once nobody waits for the clip: skipped


@dataclass
class _Job:
    work: FinishWork
    on_done: OnDone
    attempt: int = 1
    broken: Any = None  # the pool that lost this clip: replaced (on the finisher thread) before a retry


class Finisher:
    """Finishes clips in order on one thread, in a pool of worker processes (or on the thread itself
    when `processes` is 0), and calls each clip's `on_done` exactly once: with the stored result, or
    with the exception that failed it. `on_done` runs on the finisher's or the pool's thread."""

    def __init__(self, settings: Any, processes: int, store: Any, db: Any) -> None:
        self.settings = settings
        self.processes = processes
        self.store = store  # used by the thread finisher only; workers open their own
        self.db = db
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Any = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="finisher", daemon=True)
        self._thread.start()

    def submit(self, work: FinishWork, on_done: OnDone) -> None:
        """Queue a clip; returns at once (any thread)."""
        self._queue.put(_Job(work, on_done))

    def close(self) -> None:
        """Stop taking clips and shut the pool down; clips still in it are cancelled (their `on_done`
        gets an error). Workers exit with the server."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # the finisher thread

    def _loop(self) -> None:
        if self.processes > 0:
            self._replace_pool(None)
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.work.abandoned():
                continue
            try:
                if self.processes == 0:
                    self._finish_here(job)
                else:
                    self._send(job)
            except Exception as exc:  # never let one clip stop the finisher
                job.on_done(None, exc)

    def _finish_here(self, job: _Job) -> None:
        work = job.work
        try:
            item = work.plan.items[work.index]
            processed = process_clip(work.clip, work.sample_rate, item.duration_s, work.plan.options)
            stored = store_clip(work.plan, work.index, processed, work.seconds, self.store, self.db)
        except Exception as exc:
            job.on_done(None, exc)
            return
        job.on_done(stored, None)

    def _new_pool(self) -> Any:
        """A pool of spawned workers that exit with this process (finisher thread only)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(self.settings, os.getpid()))
        pool.submit(ping)  # start the workers now, in the background
        return pool

    def _replace_pool(self, broken: Any) -> None:
        """Swap in a new pool if `broken` is still the current one (several lost clips, one rebuild).
        Finisher thread only. A pool that cannot be started leaves None: the next clip tries again."""
        if self._pool is not broken or self._stop.is_set():
            return
        self._pool = None
        if broken is not None:
            log.error("finisher pool broken (a worker process died); starting a new one")
            with contextlib.suppress(Exception):
                broken.shutdown(wait=False, cancel_futures=True)
        try:
            self._pool = self._new_pool()
        except Exception:
            log.exception("cannot start the finisher pool")

    def _send(self, job: _Job) -> None:
        """Send a clip to the pool (finisher thread); a pool found broken is replaced, once per clip."""
        work = job.work
        args = (finish_clip, one_item_plan(work.plan, work.index), work.clip, work.sample_rate, work.seconds)
        if job.broken is not None:
            self._replace_pool(job.broken)
        for _ in range(2):
            if self._pool is None:
                self._replace_pool(None)
            pool = self._pool
            try:
                if pool is None:
                    raise RuntimeError("no finisher pool (see the log)")
                future = pool.submit(*args)
            except Exception as exc:  # BrokenProcessPool, or shut down
                if self._stop.is_set():
                    job.on_done(None, exc)
                    return
                self._replace_pool(pool)
                continue
            future.add_done_callback(lambda f, j=job, p=pool: self._pool_done(j, p, f))
            return
        job.on_done(None, RuntimeError("the finisher pool cannot be (re)started"))

    def _pool_done(self, job: _Job, pool: Any, future: Any) -> None:
        """Runs on the pool's thread: report the outcome, or hand a clip of a broken pool back."""
        from concurrent.futures.process import BrokenProcessPool

        if future.cancelled():
            job.on_done(None, RuntimeError("finisher stopped"))
            return
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool) and not self._stop.is_set() and job.attempt < MAX_FINISH_ATTEMPTS:
            log.warning("clip %d of %s lost with a worker process; finishing it again (attempt %d)",
                        job.work.index, job.work.plan.batch_id, job.attempt + 1)
            self._queue.put(_Job(job.work, job.on_done, job.attempt + 1, broken=pool))
            return
        if exc is not None:
            job.on_done(None, exc)
        else:
            job.on_done(future.result(), None)
