"""Post-processing and storing in worker processes (`process_clip` + `store_clip`, unchanged).

On small CPUs the tiny model's generation loop is mostly Python, so finishing clips on a thread of
the same process competes with it for the GIL; a worker process runs them on another core. Each
worker opens its own asset store and provenance DB once (SQLite WAL is multi-process safe; the
cache-key constraint keeps assets exactly-once whichever process writes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicops.generation.batch import BatchPlan, process_clip, store_clip

_worker: dict[str, Any] = {}


def init_worker(settings: Any) -> None:
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
    processed = process_clip(clip, sample_rate, plan.items[0].duration_s, plan.options)
    return store_clip(plan, 0, processed, seconds, _worker["store"], _worker["db"])
