"""The batch metrics' formulas, pinned: dashboards and MLflow comparisons read these numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from musicops.generation.metrics import batch_metrics
from musicops.generation.results import ClipOutcome


def _outcome(duration_s: float, cache_hit: bool = False, latency_s: float = 1.0) -> ClipOutcome:
    record = SimpleNamespace(duration_s=duration_s, passed=True)  # the two AssetRecord fields the formulas read
    return ClipOutcome(item=None, record=record, cache_hit=cache_hit, created=not cache_hit,  # type: ignore[arg-type]
                       latency_s=latency_s)


def test_real_time_factor_is_audio_seconds_per_compute_second_and_cost_is_split_by_loading() -> None:
    outcomes = [_outcome(8.0), _outcome(8.0), _outcome(8.0, cache_hit=True)]
    m = batch_metrics(outcomes, wall_s=120.0, generation_s=64.0, price_per_hour=3.6, load_s=30.0)
    assert m["real_time_factor"] == pytest.approx(16.0 / 64.0)  # 0.25: four times slower than real time
    assert m["tracks_per_minute"] == pytest.approx(2 / 2.0)
    # 3.6/h for 120 s = 0.12 over 16 s (0.2667 min) of new audio; without the 30 s load: 0.09
    assert m["cost_per_generated_minute"] == pytest.approx(0.12 / (16 / 60))
    assert m["cost_per_generated_minute_excl_loading"] == pytest.approx(0.09 / (16 / 60))
    assert m["model_load_seconds"] == 30.0 and m["n_cache_hits"] == 1.0


def test_an_all_cached_batch_has_no_rates() -> None:
    m = batch_metrics([_outcome(4.0, cache_hit=True)], wall_s=2.0, generation_s=0.0, price_per_hour=1.0)
    assert m["real_time_factor"] == 0.0 and m["cost_per_generated_minute"] == 0.0
    assert m["cost_per_generated_minute_excl_loading"] == 0.0 and m["tracks_per_minute"] == 0.0
