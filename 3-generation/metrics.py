"""A batch's numbers: counts, throughput (tracks per minute), real-time factor, latency percentiles
and cost per generated minute of audio.

Its own module because the batch run, the kfp summary step and the serving engine report the same
metrics from the same formulas.
"""

from __future__ import annotations

import numpy as np

from musicops.config import Settings
from musicops.generation.planning import BatchOptions
from musicops.generation.results import ClipOutcome


def batch_metrics(outcomes: list[ClipOutcome], wall_s: float, generation_s: float,
                  price_per_hour: float, load_s: float = 0.0) -> dict[str, float]:
    """`real_time_factor` is audio seconds per compute second (the usual definition: above 1 is faster
    than real time); `wall_s` includes model loading (`load_s`), so cost per generated minute comes
    twice: with loading (what this run cost) and without (what the next clip costs once loaded)."""
    generated = [o for o in outcomes if not o.cache_hit]
    audio_s = sum(o.record.duration_s for o in generated)
    latencies = [o.latency_s for o in generated]
    minutes = audio_s / 60.0
    metrics = {
        "n_items": float(len(outcomes)), "n_generated": float(len(generated)),
        "n_cache_hits": float(len(outcomes) - len(generated)),
        "n_failed_checks": float(sum(1 for o in outcomes if not o.record.passed)),
        "n_not_reproduced": float(sum(1 for o in outcomes if not o.identical)),
        "cache_hit_ratio": (len(outcomes) - len(generated)) / len(outcomes) if outcomes else 0.0,
        "wall_seconds": wall_s, "generation_seconds": generation_s, "generated_audio_seconds": audio_s,
        "tracks_per_minute": len(generated) / (wall_s / 60.0) if generated and wall_s > 0 else 0.0,
        "real_time_factor": audio_s / generation_s if audio_s and generation_s > 0 else 0.0,
        "model_load_seconds": load_s,
        "cost_per_generated_minute": (price_per_hour * wall_s / 3600.0) / minutes if minutes else 0.0,
        "cost_per_generated_minute_excl_loading":
            (price_per_hour * max(wall_s - load_s, 0.0) / 3600.0) / minutes if minutes else 0.0,
    }
    if latencies:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        metrics.update(latency_p50_s=float(p50), latency_p95_s=float(p95), latency_p99_s=float(p99))
    return metrics


def price_per_hour(options: BatchOptions, settings: Settings) -> float:
    """The accelerator price the cost metric uses: the batch's own, else the settings default."""
    return options.price_per_hour if options.price_per_hour is not None else settings.price_per_accelerator_hour
