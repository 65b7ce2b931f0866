"""Running the model over work items: batches of equal duration, each one `model.generate` call.

Its own module because the batch runner, the kfp generate step and the serving engine feed the
model the same way (normalised prompts, per-item seeds), and nothing else here touches the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

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
    melodies = _melodies(model, items)
    for indices in batches_of(items, options.batch_size):
        params = options.sampling.params(items[indices[0]].duration_s)
        started = time.perf_counter()
        prompts, seeds = [items[i].normalized_prompt for i in indices], [items[i].seed for i in indices]
        if melodies:
            clips = model.generate(prompts, params, seed=seeds,  # type: ignore[call-arg]  # MelodyMusicGen
                                   melody=[melodies.get(items[i].melody or "") for i in indices])
        else:
            clips = model.generate(prompts, params, seed=seeds)
        on_batch(indices, clips, time.perf_counter() - started)


def _melodies(model: MusicModel, items: list[WorkItem]) -> dict[str, Any]:
    """Each reference melody the items name, read once; a model that takes none refuses them by name."""
    paths = sorted({item.melody for item in items if item.melody})
    if not paths:
        return {}
    from musicops.models.melody import Melody, MelodyMusicGen

    if not isinstance(model, MelodyMusicGen):
        raise ValueError(f"{len(paths)} prompt(s) name a melody, but this model is not MusicGen-melody "
                         "(use musicgen-melody-tiny or a melody checkpoint)")
    melodies = {path: Melody.from_file(path) for path in paths}
    for item in items:  # the file must still be the one planned (its sha256 is in the cache key)
        if item.melody and melodies[item.melody].sha256 != item.melody_sha256:
            raise ValueError(f"melody {item.melody} changed after planning")
    return melodies


def batches_of(items: list[WorkItem], batch_size: int) -> Iterator[list[int]]:
    by_duration: dict[float, list[int]] = {}
    for index, item in enumerate(items):
        by_duration.setdefault(item.duration_s, []).append(index)
    for indices in by_duration.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start:start + batch_size]
