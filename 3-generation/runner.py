"""Running the model over work items: batches of equal duration, each one `model.generate` call.

Its own module because the batch runner, the kfp generate step and the serving engine feed the
model the same way (normalised prompts, per-item seeds), and nothing else here touches the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from musicops.generation.planning import BatchOptions
from musicops.generation.prompts import WorkItem
from musicops.models.base import MusicModel


def generate_items(model: MusicModel, items: list[WorkItem], options: BatchOptions,
                   on_batch: Callable[[list[int], list[np.ndarray], float], None]) -> None:
    """Generate in batches of items with equal duration; call `on_batch(indices, clips, seconds)`.

    The model is fed the normalised prompt, the one the cache key hashes: two spellings that share a
    key get the same audio, so a cache hit is exactly what a fresh generation would have produced.
    """
    for indices in batches_of(items, options.batch_size):
        params = options.sampling.params(items[indices[0]].duration_s)
        started = time.perf_counter()
        clips = model.generate([items[i].normalized_prompt for i in indices], params,
                               seed=[items[i].seed for i in indices])
        on_batch(indices, clips, time.perf_counter() - started)


def batches_of(items: list[WorkItem], batch_size: int) -> Iterator[list[int]]:
    by_duration: dict[float, list[int]] = {}
    for index, item in enumerate(items):
        by_duration.setdefault(item.duration_s, []).append(index)
    for indices in by_duration.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start:start + batch_size]
