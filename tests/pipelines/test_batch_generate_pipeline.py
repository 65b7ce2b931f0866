"""The batch generation pipeline under kfp.local: ParallelFor over shards, then a cached rerun."""

from __future__ import annotations

import json

import pytest

from musicops.config import get_settings
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # runs a kfp.local pipeline


def test_batch_pipeline_generates_then_hits_the_cache(tmp_path) -> None:
    from musicops.pipelines.local import run_local

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "calm ambient pad", "duration_s": 1.0, "seed": 3},
        {"prompt": "upbeat drums", "duration_s": 1.0, "n_variations": 2},
        {"prompt": "sad piano", "duration_s": 1.5},
    ]))
    settings = get_settings()
    arguments = {"prompts_file": str(prompts), "model_ref": "musicgen-tiny", "shard_size": 2,
                 "mlflow_tracking_uri": settings.mlflow_tracking_uri}
    first = run_local("batch-generate", arguments, settings)
    db = ProvenanceDB.from_settings(settings)
    try:
        records = db.list_assets(first)
        assert len(records) == 4 and all(r.passed for r in records)
        assert {r.model_uri for r in records} == {"musicgen-tiny"}
        second = run_local("batch-generate", arguments, settings)
        assert second != first
        assert db.count_assets() == 4, "the rerun must not add rows"
        assert db.get_batch(second).counts["n_cache_hits"] == 4
    finally:
        db.close()
