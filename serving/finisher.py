"""Post-processing and storing in worker processes (`process_clip` + `store_clip`, unchanged).

On small CPUs the tiny model's generation loop is mostly Python, so finishing clips on a thread of
the same process competes with it for the GIL; a worker process runs them on another core. Each
worker opens its own asset store and provenance DB once (SQLite WAL is multi-process safe; the
cache-key constraint keeps assets exactly-once whichever process writes).

Isolation: a clip's failure comes back as a `FinishError` (plain text, always picklable), so it
fails only its own request. An exception class that cannot be rebuilt from its args (AudioError
takes two) would fail to unpickle in the server and break the pool, failing every clip in flight.
A worker dies with the server: PR_SET_PDEATHSIG on Linux, and a parent-pid watchdog everywhere.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import numpy as np

from musicops.generation.batch import BatchPlan, process_clip, store_clip

_worker: dict[str, Any] = {}
_PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 0.5


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
    from musicops.generation.batch import BatchOptions
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
