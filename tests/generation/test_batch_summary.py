"""The kfp summary step reports this run's timings, never a regenerated asset's first-run figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicops.config import Settings
from musicops.generation.batch import open_batch, run_batch, summarize_plan
from musicops.generation.planning import BatchOptions, plan_batch
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # one tiny-preset generation


def test_a_no_cache_rerun_reports_its_own_generation_seconds(tmp_path: Path) -> None:
    settings = Settings.from_values(home=tmp_path / "home").ensure()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "soft marimba loop", "duration_s": 0.5, "seed": 2}) + "\n")
    first = run_batch(prompts, "musicgen-tiny", BatchOptions(log_to_mlflow=False), settings)
    first_row_seconds = first.outcomes[0].record.generation_seconds

    rerun = plan_batch(prompts, "musicgen-tiny", BatchOptions(use_cache=False, log_to_mlflow=False), settings)
    db = ProvenanceDB.from_settings(settings)
    try:
        open_batch(rerun, db)
    finally:
        db.close()
    measured_now = first_row_seconds + 41.5  # what this run's store step measured (any other figure)
    summary = summarize_plan(rerun, settings, {0: measured_now})
    assert summary.outcomes[0].record.generation_seconds == first_row_seconds  # the row is the first run's
    assert summary.metrics["generation_seconds"] == pytest.approx(measured_now)
    assert summary.outcomes[0].latency_s == pytest.approx(measured_now)
