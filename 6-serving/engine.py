"""Generation for the API: the batch pipeline's steps behind a dynamic batcher.

A request becomes a `BatchPlan` over the same work items, cache keys (`item_params`,
`model_identity`, `cache_key`) and options as a one-line prompts file, so assets and provenance
rows are identical to the batch pipeline's. Keyed requests carry their tenant into the cache key
(one cache per tenant: a hit never reveals another tenant's prompts); a batch planned with
`BatchOptions(tenant=...)` fills that tenant's cache. Cache hits are answered from the provenance DB without touching the model.

Misses go to one model thread, which runs continuous batching (iteration-level scheduling,
`musicops.models.continuous.ContinuousBatch`): every waiting request's clips join the running batch
at the next decode step, whatever their duration or sampling params, and each clip leaves the batch
(EnCodec, then the finisher) as soon as its own steps are done, so a short request never waits for a
long one. At most `max_batch_size` clips are in flight; each holds a KV slot sized to its steps, so
KV memory is bounded by `max_batch_size` x the slot of `max_duration_s`. `max_wait_ms` only matters
when the model is idle: a new decode run waits that long for requests already being admitted (a
lone request never waits); once a run is going, arrivals join at the next step. Clips are
bit-identical to a solo `generate` whatever they decode alongside and whenever they joined, so
batching never changes an asset. A hot swap lets the clips in flight (and the rest of their
requests) finish on the model they started on; requests not started yet are re-planned on the new
model, which starts its own batch once the old one is drained. Each clip is then post-processed
(`process_clip`) and stored (`store_clip`) while the model thread decodes on, by `finisher.Finisher`:
in `finish_processes` worker processes, or on its own thread when that is 0 (the process pool's
lifecycle, rebuilt when a worker dies, lives there). A clip that fails fails only its own request.
A model without continuous batching (`continuous`) is run one request at a time through
`generate_items`, as the batch pipeline runs it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from musicops.config import Settings
from musicops.generation.batch import open_batch
from musicops.generation.metrics import batch_metrics
from musicops.generation.planning import BatchOptions, BatchPlan, SamplingOptions, item_params
from musicops.generation.prompts import WorkItem, expand, validate_record
from musicops.generation.results import ClipOutcome
from musicops.generation.runner import generate_items
from musicops.serving.finisher import Finisher, FinishWork, OnDone, Stored
from musicops.store.assets import open_asset_store
from musicops.store.cache import cache_key
from musicops.store.provenance import ProvenanceDB

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


class GenerationError(RuntimeError):
    """The model or the store failed for this request (details are logged, not sent to clients)."""


@dataclass
class Ticket:
    """One request's work while it waits for and goes through the model."""

    plan: BatchPlan
    future: Future
    on_progress: Progress | None
    created: float = field(default_factory=time.monotonic)
    outcomes: dict[int, ClipOutcome] = field(default_factory=dict)
    opened: bool = False
    started: float = 0.0

    @property
    def pending(self) -> list[int]:
        return [i for i in range(len(self.plan.items)) if i not in self.outcomes]

    @property
    def compat(self) -> tuple[Any, ...]:
        """Requests with equal compat keys can share one model call."""
        return (self.plan.items[0].duration_s, self.plan.options.sampling)


@dataclass
class StreamTicket:
    """One streamed clip (`musicops.serving.streaming`): its `ClipRequest` carries `on_frames` (and a
    continuation `prefix`); `on_done(clip, None)` or `on_done(None, exc)` is called exactly once, on
    the model thread. No EnCodec or finisher here: the stream decodes its own frames as they come."""

    request: Any  # ClipRequest; its tag is set to (self, 0) when it is queued
    model_id: str  # the stream's codec and cache key are this model's: a swap before it starts fails it
    on_done: Callable[[Any, BaseException | None], None]
    created: float = field(default_factory=time.monotonic)
    done: bool = False

    @property
    def pending(self) -> list[int]:
        return [] if self.done else [0]

    def finish(self, clip: Any, exc: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.on_done(clip, exc)
        except Exception:
            log.exception("stream completion callback failed")


def new_batch_id(prefix: str = "api") -> str:
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


REQUEST_LINE_FIELDS = ("prompt", "duration_s", "seed", "n_variations", "tags", "template", "vars", "preset")


def request_items(request: dict[str, Any]) -> list[WorkItem]:
    """A request's work items: its line fields (prompt or template + vars, duration, seed, variations,
    tags, preset; unset ones left out) checked and expanded exactly like one line of a prompts file
    (same limits, same derived seeds, same templates and presets), so both make the same assets."""
    return expand([validate_record(1, _line_record(request))])


def batch_request_items(request: dict[str, Any]) -> list[WorkItem]:
    """A batch job's work items: its lines numbered from 1, expanded together like one prompts file
    (a prompt repeated without a seed gets a new seed each time, as in a file)."""
    return expand([validate_record(number, _line_record(line)) for number, line in enumerate(request["items"], 1)])


def _line_record(request: dict[str, Any]) -> dict[str, Any]:
    return {k: request[k] for k in REQUEST_LINE_FIELDS if request.get(k) not in (None, [], {})}


class Engine:
    def __init__(self, manager: Any, settings: Settings, max_batch_size: int = 8, max_wait_ms: float = 10.0,
                 metrics: Any = None, formats: tuple[str, ...] = ("wav", "flac"), finish_processes: int = 1,
                 max_duration_s: float | None = None, precision: str = "fp32") -> None:
        self.manager = manager
        self.precision = precision  # planned into each item's params: non-fp32 audio has its own cache keys
        self.settings = settings
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.metrics = metrics
        self.formats = formats
        self.db = ProvenanceDB.from_settings(settings)
        self.store = open_asset_store(settings)
        self._cond = threading.Condition()
        self._queue: list[Ticket | StreamTicket] = []
        self._arriving = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.finish_processes = finish_processes
        self._finisher = Finisher(settings, finish_processes, self.store, self.db)
        self._outcome_lock = threading.Lock()
        # ETAs: compute seconds per audio second, EWMA over clips of the model in service (the rate
        # measured at its load until then); the model it belongs to, so a hot swap starts afresh
        self._rate: tuple[str, float] | None = None
        self._direct_audio_s = 0.0  # audio in a one-request-per-call model run (no continuous batching)
        self.in_model = 0  # clips in flight in the model now
        self.max_duration_s = max_duration_s  # KV slots never need more steps than this duration's
        # the model thread's continuous batch and the loaded model it runs (None: idle, nothing built)
        self._batch: Any = None
        self._batch_model: Any = None
        self._run_started = 0.0  # when the current decode run (steps with clips in flight) began
        self._run_clips = 0  # clips admitted during it

    # lifecycle

    def start(self) -> None:
        self.store.sweep_partials()
        thread = threading.Thread(target=self._work, name="model-worker", daemon=True)
        thread.start()
        self._threads.append(thread)
        self._finisher.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._finisher.close()  # workers exit with the server
        for thread in self._threads:
            thread.join(timeout=10)
        self.db.close()

    # planning (request threads)

    def options(self, sampling: SamplingOptions, user: str) -> BatchOptions:
        return BatchOptions(batch_size=self.max_batch_size, sampling=sampling, formats=self.formats, user=user,
                            log_to_mlflow=False, precision=self.precision)

    def plan(self, items: list[WorkItem], options: BatchOptions, source: str, batch_id: str | None = None,
             loaded: Any = None, count: bool = True) -> BatchPlan:
        """`plan_batch` for a model already resolved and loaded: the same keys and cache test, without
        re-resolving the reference or opening a database per request (a cache hit costs ~1 ms)."""
        loaded = loaded or self.manager.current
        keys = [cache_key(i.normalized_prompt, item_params(i, options), loaded.model_id, i.seed, options.tenant)
                for i in items]
        found = self.db.find_by_cache_keys(sorted(set(keys)))
        cached = {k: r for k, r in found.items()
                  if all(self.store.exists(f["sha256"], fmt) for fmt, f in r.files.items())}
        plan = BatchPlan(batch_id or new_batch_id(), source, "", loaded.resolved, loaded.model_id, items, keys,
                         cached, options)
        if count and self.metrics:
            hits = sum(1 for k in keys if k in cached)
            self.metrics.cache(hits, len(keys) - hits)
        return plan

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way to the batcher, so a forming batch waits for it (max_wait_ms)."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def submit(self, plan: BatchPlan, on_progress: Progress | None = None) -> Future:
        """Future of the plan's `ClipOutcome`s in item order; resolved at once when all are cached.
        Blocking (a database write on a miss): call it from a worker thread, not the event loop."""
        ticket = Ticket(plan, Future(), on_progress)
        ticket.future.set_running_or_notify_cancel()
        self._take_cached(ticket)
        if not ticket.pending:
            self._resolve(ticket)
            return ticket.future
        # The batch row goes in here, on the caller's thread, so the model thread only generates.
        open_batch(plan, self.db)
        ticket.opened = True
        with self._cond:
            self._queue.append(ticket)
            self._cond.notify_all()
        return ticket.future

    def stream(self, ticket: StreamTicket) -> None:
        """Queue one streamed clip: it joins the running batch at the next step like any clip, and its
        frames go to `ticket.request.on_frames` as they are decoded."""
        ticket.request.tag = (ticket, 0)
        with self._cond:
            self._queue.append(ticket)
            self._cond.notify_all()

    def queue_depth(self) -> int:
        batch = self._batch
        with self._cond:
            return sum(len(t.pending) for t in self._queue) + (len(batch.waiting) if batch is not None else 0)

    def queued_audio_s(self) -> float:
        """Seconds of audio waiting for or decoding in the model."""
        batch = self._batch
        with self._cond:
            queued = sum(float(t.request.params.duration_s) if isinstance(t, StreamTicket)
                         else sum(t.plan.items[i].duration_s for i in t.pending) for t in self._queue)
        in_batch = 0.0
        if batch is not None:  # read without the model thread's lock: a rough figure is all an ETA needs
            in_batch = (sum(r.params.duration_s for r in list(batch.waiting))
                        + sum(a.request.params.duration_s for a in list(batch.active)))
        return queued + in_batch + self._direct_audio_s

    def seconds_per_audio_s(self) -> float:
        """The model in service's measured compute seconds per audio second (0 before a model is loaded)."""
        try:
            loaded = self.manager.current()
        except Exception:  # noqa: BLE001 - not loaded yet: no estimate
            return 0.0
        rate = self._rate
        return rate[1] if rate is not None and rate[0] == loaded.model_id else loaded.seconds_per_audio_s

    def eta_s(self, audio_s_ahead: float) -> float:
        """Seconds until `audio_s_ahead` more seconds of audio (plus what the model holds now) are
        generated, at the loaded model's measured speed."""
        return (audio_s_ahead + self.queued_audio_s()) * self.seconds_per_audio_s()

    def _observe_rate(self, model_id: str, seconds: float, audio_s: float) -> None:
        if audio_s <= 0:
            return
        sample = seconds / audio_s
        rate = self._rate
        self._rate = (model_id, sample if rate is None or rate[0] != model_id else 0.8 * rate[1] + 0.2 * sample)

    # the model thread

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                if self._admit():
                    self._step()
            except Exception as exc:  # never let one bad step stop the worker
                log.exception("model step failed")
                self._fail_in_flight(exc)

    def _wait_for_work(self) -> bool:
        """Idle model: block until a request waits; a new run waits up to max_wait_ms for requests
        still being admitted (a lone request never waits). Called holding `_cond`."""
        while not self._queue:
            if self._stop.is_set():
                return False
            self._cond.wait(0.5)
        first = self._queue[0]
        deadline = first.created + self.max_wait_s
        while not self._stop.is_set():
            ready = sum(len(t.pending) for t in self._queue)
            remaining = deadline - time.monotonic()
            if ready >= self.max_batch_size or self._arriving == 0 or remaining <= 0:
                break
            self._cond.wait(remaining)
        return not self._stop.is_set()

    def _busy(self) -> bool:
        return self._batch is not None and not self._batch.idle

    def _admit(self) -> bool:
        """Move waiting requests into the continuous batch while it has places; True when there are
        clips to decode. After a hot swap, nothing new joins until the old model's batch drains."""
        with self._cond:
            if not self._busy() and not self._wait_for_work():
                return False
        while True:
            loaded = self.manager.current
            if self._batch is not None and self._batch_model.model_id != loaded.model_id:
                if self._busy():
                    break  # in-flight clips finish on the model they started on
                self._batch = None
            batch = self._batch
            if batch is not None and batch.free_places - len(batch.waiting) <= 0:
                break
            with self._cond:
                if not self._queue:
                    break
                ticket = self._queue.pop(0)
            try:
                self._start_ticket(ticket, loaded)
            except Exception as exc:
                log.exception("starting %s failed", "a stream" if isinstance(ticket, StreamTicket)
                              else ticket.plan.batch_id)
                self._fail(ticket, exc)
        return self._busy()

    def _ensure_batch(self, loaded: Any) -> None:
        if self._batch is None:
            model = loaded.model
            slot_steps = model.tokens_for(self.max_duration_s) if self.max_duration_s else None
            self._batch = model.continuous(self.max_batch_size, slot_steps)
            self._batch_model = loaded
        if not self._busy():
            self._run_started, self._run_clips = time.perf_counter(), 0

    def _start_stream(self, ticket: StreamTicket, loaded: Any) -> None:
        if ticket.model_id != loaded.model_id:
            raise GenerationError("the model was swapped before the stream started; retry")
        if not callable(getattr(loaded.model, "continuous", None)):
            raise GenerationError("streaming needs a model with continuous batching")
        self._ensure_batch(loaded)
        self._batch.submit(ticket.request)
        self._run_clips += 1

    def _replan(self, ticket: Ticket, loaded: Any) -> bool:
        """A request queued before a hot swap is re-planned on the new model (its keys name the model).
        False when the new model's cache answers it whole (it is resolved here); True to generate."""
        if ticket.plan.model_id == loaded.model_id:
            return True
        ticket.plan = self.plan(ticket.plan.items, ticket.plan.options, ticket.plan.prompts_file,
                                ticket.plan.batch_id, loaded, count=False)
        ticket.outcomes.clear()
        self._take_cached(ticket)
        if not ticket.pending:
            self._resolve(ticket)
            return False
        open_batch(ticket.plan, self.db)  # the batch row now names the new version
        ticket.opened = True
        return True

    def _start_ticket(self, ticket: Ticket | StreamTicket, loaded: Any) -> None:
        """Re-plan a request queued before a hot swap, then queue its clips in the batch."""
        if isinstance(ticket, StreamTicket):
            self._start_stream(ticket, loaded)
            return
        if not self._replan(ticket, loaded):
            return
        ticket.started = time.perf_counter()
        if not callable(getattr(loaded.model, "continuous", None)):
            self._run([ticket])  # a backend without continuous batching: one request per model call
            return
        self._ensure_batch(loaded)
        from musicops.models.continuous import ClipRequest

        sampling = ticket.plan.options.sampling
        for index in ticket.pending:
            item = ticket.plan.items[index]
            self._batch.submit(ClipRequest(item.normalized_prompt, sampling.params(item.duration_s), item.seed,
                                           tag=(ticket, index)))
            self._run_clips += 1

    def _step(self) -> None:
        """One decode step of every clip in flight; finished clips go to EnCodec and the finisher."""
        batch, loaded = self._batch, self._batch_model
        result = batch.step()
        self.in_model = batch.in_flight
        if self.metrics:
            self.metrics.decode_step(result.rows, batch.in_flight, batch.peak_rows, batch.kv_bytes())
        for request, exc in result.failed:
            ticket, _ = request.tag
            log.error("admitting a clip of %s failed: %s: %s", ticket.plan.batch_id, type(exc).__name__, exc)
            self._fail(ticket, exc)
        for clip in result.finished:
            ticket, index = clip.request.tag
            if isinstance(ticket, StreamTicket):
                ticket.finish(clip, None)
                continue
            share = clip.seconds / max(1.0, clip.mean_batch)
            self._observe_rate(loaded.model_id, share, clip.request.params.duration_s)
            try:
                audio = batch.audio(clip)
            except Exception as exc:  # EnCodec failed this clip: only its request fails
                log.exception("decoding audio of %s failed", ticket.plan.batch_id)
                self._fail(ticket, exc)
                continue
            work = FinishWork(ticket.plan, index, audio, loaded.model.sample_rate, share, ticket.future.done)
            self._finisher.submit(work, self._on_finished(ticket, index, share))
        if batch.idle and self._run_clips:  # a decode run ended: what used to be one batch's metrics
            if self.metrics:
                version = loaded.resolved.version or loaded.resolved.name
                self.metrics.generation_seconds.labels(version).observe(time.perf_counter() - self._run_started)
                self.metrics.batch_size.observe(self._run_clips)
            self._run_clips = 0

    def _fail_in_flight(self, exc: BaseException) -> None:
        """A step failed: every request with clips in the batch fails; the next request starts afresh."""
        batch, self._batch = self._batch, None
        self.in_model = 0
        self._run_clips = 0
        if batch is None:
            return
        tickets = {id(item.request.tag[0]): item.request.tag[0] for item in batch.active}
        tickets.update({id(r.tag[0]): r.tag[0] for r in batch.waiting})
        for ticket in tickets.values():
            self._fail(ticket, exc)
        if self.metrics:
            self.metrics.decode_step(0, 0, batch.peak_rows, 0)

    def _run(self, batch: list[Ticket]) -> None:
        loaded = self.manager.current  # snapshot: a swap during this call does not affect it
        runnable = []
        for ticket in batch:
            if not self._replan(ticket, loaded):
                continue
            ticket.started = time.perf_counter()
            runnable.append(ticket)
        owners = [(ticket, index) for ticket in runnable for index in ticket.pending]
        if not owners:
            return
        items = [ticket.plan.items[index] for ticket, index in owners]
        options = BatchOptions(batch_size=self.max_batch_size, sampling=runnable[0].plan.options.sampling,
                               formats=self.formats, log_to_mlflow=False, precision=self.precision)

        def on_batch(local: list[int], clips: list[np.ndarray], seconds: float) -> None:
            share = seconds / max(1, len(clips))
            self._observe_rate(loaded.model_id, share, items[local[0]].duration_s)
            if self.metrics:
                self.metrics.generation_seconds.labels(loaded.resolved.version or loaded.resolved.name).observe(seconds)
                self.metrics.batch_size.observe(len(clips))
            for position, clip in zip(local, clips, strict=True):
                ticket, index = owners[position]
                work = FinishWork(ticket.plan, index, clip, loaded.model.sample_rate, share, ticket.future.done)
                self._finisher.submit(work, self._on_finished(ticket, index, share))

        self.in_model = len(items)
        self._direct_audio_s = sum(item.duration_s for item in items)
        try:
            generate_items(loaded.model, items, options, on_batch)
        finally:
            self.in_model = 0
            self._direct_audio_s = 0.0

    # finished clips (the finisher's or its pool's thread)

    def _on_finished(self, ticket: Ticket, index: int, seconds: float) -> OnDone:
        """The callback that turns one clip's finishing into its request's outcome."""
        def on_done(stored: Stored | None, exc: BaseException | None) -> None:
            if exc is not None or stored is None:
                self._clip_failed(ticket, exc or RuntimeError("no result"))
            else:
                self._clip_done(ticket, index, seconds, stored)

        return on_done

    def _clip_done(self, ticket: Ticket, index: int, seconds: float, stored: Stored) -> None:
        record, created, identical = stored
        with self._outcome_lock:
            if ticket.future.done():
                return
            ticket.outcomes[index] = ClipOutcome(ticket.plan.items[index], record, False, created, seconds, identical)
            done, finished = len(ticket.outcomes), not ticket.pending
        if self.metrics and created:
            self.metrics.generated_audio_seconds.inc(record.duration_s)
        try:
            if ticket.on_progress:
                ticket.on_progress(done, len(ticket.plan.items))
        except Exception:
            log.exception("progress callback failed")
        if finished:
            self._resolve(ticket)

    def _clip_failed(self, ticket: Ticket, exc: BaseException) -> None:
        log.error("post-processing or storing a clip of %s failed: %s: %s", ticket.plan.batch_id,
                  type(exc).__name__, exc)
        self._fail(ticket, exc)

    # outcomes

    def _take_cached(self, ticket: Ticket) -> None:
        for index, key in enumerate(ticket.plan.keys):
            if key in ticket.plan.cached:
                ticket.outcomes[index] = ClipOutcome(ticket.plan.items[index], ticket.plan.cached[key], True, False)

    def _resolve(self, ticket: Ticket) -> None:
        ordered = [ticket.outcomes[i] for i in range(len(ticket.plan.items))]
        if ticket.opened:
            wall = time.perf_counter() - ticket.started
            generation = sum(o.latency_s for o in ordered if not o.cache_hit)
            metrics = batch_metrics(ordered, wall, generation, self.settings.price_per_accelerator_hour)
            try:
                self.db.finish_batch(ticket.plan.batch_id, "finished",
                                     {k: v for k, v in metrics.items() if k.startswith("n_")})
            except Exception:
                log.exception("closing batch row %s failed", ticket.plan.batch_id)
        if not ticket.future.done():
            ticket.future.set_result(ordered)

    def _fail(self, ticket: Ticket | StreamTicket, exc: BaseException) -> None:
        if isinstance(ticket, StreamTicket):
            if self.metrics and not ticket.done:
                self.metrics.error("generation")
            ticket.finish(None, exc)
            return
        if ticket.future.done():
            return
        if ticket.opened:
            with contextlib.suppress(Exception):
                self.db.finish_batch(ticket.plan.batch_id, "failed", {"n_done": len(ticket.outcomes)})
        if self.metrics:
            self.metrics.error("generation")
        ticket.future.set_exception(GenerationError(f"generation failed ({type(exc).__name__})"))
