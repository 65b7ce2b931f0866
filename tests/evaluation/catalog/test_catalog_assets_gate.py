"""The copyright gate over stored assets: an excerpt of a catalog work is blocked, the verdict
(matched work, offsets, scores) lands in the asset's provenance; unrelated audio passes."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from musicops.audio.encode import encode
from musicops.audio.io import read_audio
from musicops.cli import app
from musicops.config import get_settings
from musicops.datasets.synth import synthesize
from musicops.store.assets import open_asset_store
from musicops.store.cache import asset_id_for, cache_key, normalize_prompt
from musicops.store.provenance import AssetRecord, ProvenanceDB


def _store_asset(db: ProvenanceDB, store, samples: np.ndarray, rate: int, prompt: str, seed: int) -> str:
    stored = store.put(encode(samples, rate, "wav"), "wav")
    normalized = normalize_prompt(prompt)
    key = cache_key(normalized, {"duration_s": 4.0}, "preset:test", seed)
    record = AssetRecord(asset_id=asset_id_for(key), cache_key=key, sha256=stored.sha256,
                         files={"wav": {"sha256": stored.sha256, "size": stored.size}}, prompt=prompt,
                         normalized_prompt=normalized, seed=seed, params={}, model_name="test", model_uri="preset:test",
                         batch_id="gate-batch", duration_s=len(samples) / rate, sample_rate=rate,
                         generation_seconds=0.0, passed=True)
    db.add_asset(record)
    return record.asset_id


@pytest.mark.slow  # FluidSynth renders (unrelated_music)
def test_excerpt_is_blocked_and_recorded_unrelated_passes(tmp_path, unrelated_music) -> None:
    from musicops.evaluation.catalog.assets_gate import gate_assets
    from musicops.evaluation.catalog.store import add_works

    settings = get_settings()
    works = tmp_path / "works"
    synthesize(works, n=4, seed=3, duration_s=8.0)
    add_works(works, "refs", settings, embedder=None)
    work = read_audio(sorted(works.glob("*.wav"))[1])
    excerpt = work.samples[int(2.0 * work.sample_rate): int(6.0 * work.sample_rate)]
    other_samples, other_rate = unrelated_music
    store = open_asset_store(settings)
    with ProvenanceDB.from_settings(settings) as db:
        copied = _store_asset(db, store, excerpt, work.sample_rate, "copy", 1)
        fresh = _store_asset(db, store, other_samples, other_rate, "fresh", 2)
    results = {r.asset_id: r for r in gate_assets("refs", batch_id="gate-batch", settings=settings)}
    assert results[copied].blocked and not results[fresh].blocked
    with ProvenanceDB.from_settings(settings) as db:
        verdict = db.gates_for(copied)[-1]
        assert verdict["gate"] == "copyright" and verdict["passed"] is False
        top = verdict["details"]["top"][0]
        assert abs(top["work_offset_s"] - 2.0) < 0.5 and top["fused_score"] >= verdict["details"]["threshold"]
        assert db.gates_for(fresh)[-1]["passed"] is True
    cli = CliRunner().invoke(app, ["catalog", "gate", "--name", "refs", "--asset", fresh])
    assert cli.exit_code == 0, cli.output
    cli = CliRunner().invoke(app, ["catalog", "gate", "--name", "refs", "--asset", copied])
    assert cli.exit_code == 1 and "BLOCKED" in cli.output
