"""The model in service: resolved once at start, alias watched, new versions hot-swapped.

`models:/NAME@ALIAS` is resolved to a version when the server starts (an unknown name or alias fails
the start). A watcher thread polls the registry every `poll_interval_s`; when the alias points at
another version, that version is downloaded and loaded in the background while the old one keeps
serving, then swapped in with one reference assignment. A model call snapshots the reference when
it starts, so in-flight batches finish on the model they started with and nothing fails; work
queued for the old version is re-planned (new cache keys) against the new one. A version that fails
to load is logged and counted, and the old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from musicops.config import Settings
from musicops.generation.planning import model_identity
from musicops.models.base import MusicModel
from musicops.models.loading import ResolvedModel, load_model, resolve_model

log = logging.getLogger(__name__)


class NotReadyError(RuntimeError):
    """No model is loaded yet (the server is starting)."""


@dataclass(frozen=True)
class LoadedModel:
    resolved: ResolvedModel
    model: MusicModel
    model_id: str  # the cache-key identity (models:/NAME/VERSION, preset:..., dir:...)
    loaded_at: float
    # compute seconds per second of audio for one clip alone, measured right after loading: the prior
    # for job ETAs until clips served by this model have been timed
    seconds_per_audio_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        r = self.resolved
        return {"name": r.name, "version": r.version, "uri": r.pinned_uri, "kind": r.kind, "model_id": self.model_id,
                "run_id": r.run_id, "loaded_at": self.loaded_at}


CALIBRATION_S = 0.5  # seconds of audio generated once at load to time the model


def measure_speed(model: MusicModel) -> float:
    """Compute seconds per second of audio for one short clip (decode steps and codec): a real-size
    model on a CPU is minutes per clip, a toy one milliseconds, and ETAs must start from the model
    actually loaded, not from a constant."""
    from musicops.models.sampling import GenerationParams

    started = time.perf_counter()
    model.generate(["calibration"], GenerationParams(duration_s=CALIBRATION_S), seed=0)
    return (time.perf_counter() - started) / CALIBRATION_S


def watched_alias(reference: str) -> str | None:
    if not reference.startswith("models:/"):
        return None
    from musicops.registry import parse_model_uri

    return parse_model_uri(reference).alias


class ModelManager:
    def __init__(self, reference: str, settings: Settings, poll_interval_s: float = 30.0,
                 metrics: Any = None, initial: ResolvedModel | None = None, precision: str = "fp32") -> None:
        self.reference = reference
        self.precision = precision  # every version this manager loads generates at this precision
        self.settings = settings
        self.poll_interval_s = poll_interval_s
        self.metrics = metrics
        self.alias = watched_alias(reference)
        self._initial = initial
        self._current: LoadedModel | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loading: str | None = None  # version being loaded in the background
        self.last_poll: float | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self._failed_version: str | None = None
        self._listeners: list[Any] = []

    # lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def current(self) -> LoadedModel:
        loaded = self._current
        if loaded is None:
            raise NotReadyError(self.last_error or "the model is still loading")
        return loaded

    def on_swap(self, callback: Any) -> None:
        self._listeners.append(callback)

    def status(self) -> dict[str, Any]:
        loaded = self._current
        return {"reference": self.reference, "alias": self.alias, "ready": loaded is not None,
                "model": loaded.describe() if loaded else None, "loading_version": self.loading,
                "poll_interval_s": self.poll_interval_s if self.alias else None, "last_poll": self.last_poll,
                "swaps": self.swaps, "last_error": self.last_error}

    # internals

    def _run(self) -> None:
        while not self._stop.is_set() and self._current is None:
            try:
                resolved = self._initial or resolve_model(self.reference, self.settings)
                self._swap(self._load(resolved))
            except Exception as exc:  # keep trying: a registry or disk hiccup must not kill the server
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("loading %s failed; retrying", self.reference)
                if self.metrics:
                    self.metrics.error("model_load")
                self._initial = None
                self._stop.wait(max(1.0, self.poll_interval_s or 5.0))
        if not self.alias or self.poll_interval_s <= 0:
            return
        while not self._stop.wait(self.poll_interval_s):
            self.poll()

    def poll(self) -> bool:
        """Check the alias once; load and swap when it moved. Returns True when a swap happened."""
        try:
            resolved = resolve_model(self.reference, self.settings)
        except Exception as exc:
            self.last_error = f"alias poll failed: {type(exc).__name__}: {exc}"
            log.warning("alias poll of %s failed: %s", self.reference, exc)
            return False
        finally:
            self.last_poll = time.time()
        current = self._current
        if current is not None and resolved.version == current.resolved.version:
            return False
        if resolved.version == self._failed_version:
            return False  # wait for the alias to move again rather than reloading a broken version
        log.info("alias %s moved: %s -> %s; loading in the background", self.reference,
                 current.resolved.version if current else None, resolved.version)
        try:
            loaded = self._load(resolved)
        except Exception as exc:
            self._failed_version = resolved.version
            self.last_error = f"loading version {resolved.version} failed: {type(exc).__name__}: {exc}"
            log.exception("loading %s failed; version %s keeps serving", resolved.pinned_uri,
                          current.resolved.version if current else None)
            if self.metrics:
                self.metrics.error("model_load")
            return False
        self._swap(loaded)
        return True

    def _load(self, resolved: ResolvedModel) -> LoadedModel:
        self.loading = resolved.version or resolved.name
        try:
            started = time.perf_counter()
            model = load_model(resolved, self.settings, precision=self.precision)
            log.info("loaded %s in %.1fs", resolved.pinned_uri, time.perf_counter() - started)
            rate = measure_speed(model)
            log.info("%s generates at %.3g compute s per audio s (one clip)", resolved.pinned_uri, rate)
            return LoadedModel(resolved, model, model_identity(resolved), time.time(), rate)
        finally:
            self.loading = None

    def _swap(self, loaded: LoadedModel) -> None:
        previous = self._current
        self._current = loaded  # one reference assignment: readers see the old or the new model
        self._failed_version = None
        self.last_error = None
        if previous is not None:
            self.swaps += 1
            log.info("now serving %s (was %s)", loaded.resolved.pinned_uri, previous.resolved.pinned_uri)
            if self.metrics:
                self.metrics.model_swaps.inc()
        if self.metrics:
            self.metrics.serving(loaded.resolved.name, loaded.resolved.version, loaded.resolved.pinned_uri)
        self._ready.set()
        for callback in self._listeners:
            callback(loaded)
