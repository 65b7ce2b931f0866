"""The gate end to end with the real (tiny) embedder on a synthetic catalog: block literal copies, pass
unrelated (real) music, grow and version the catalog. Calibration is tested on real music
(test_catalog_realmusic.py): synthetic clips are no null for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from musicops.audio.io import read_audio
from musicops.config import get_settings
from musicops.datasets.synth import synthesize
from musicops.evaluation.catalog.calibrate import threshold_for
from musicops.evaluation.catalog.gate import DEFAULT_THRESHOLD, check_asset, search
from musicops.evaluation.catalog.store import CatalogError, add_works, load_catalog

SR = 16000


@pytest.fixture(scope="module")
def embedder():
    from musicops.evaluation.embedders import get_embedder

    return get_embedder("clap-tiny")


@pytest.fixture(scope="module")
def works_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("catalog-works")
    synthesize(out, n=8, seed=5, duration_s=8.0, sample_rate=SR)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("catalog-home")


@pytest.fixture
def catalog(embedder, works_dir, home, monkeypatch):
    """One catalog for the module (built once, in a home the module shares)."""
    monkeypatch.setenv("MUSICOPS_HOME", str(home))
    if not (home / "catalog" / "ref").exists():
        add_works(works_dir, "ref", get_settings(), embedder)
    cat = load_catalog("ref", 1)
    cat.use_embedder(embedder)
    return cat


@pytest.fixture
def unrelated(unrelated_music):
    """Real music (not in the synthetic catalog), at the catalog's rate, `seconds` long."""
    from scipy.signal import resample_poly

    samples, rate = unrelated_music
    at_sr = resample_poly(samples, SR, rate).astype(np.float32)
    return lambda seconds: at_sr[: int(seconds * SR)]


def test_built_with_embeddings_and_fingerprints(catalog, embedder) -> None:
    info = catalog.info
    assert info["embedder"]["embedder"] == "clap-tiny" and info["embedder"] == embedder.provenance().to_dict()
    assert info["counts"]["works"] == 8 and catalog.index is not None and catalog.index.kind == "flat"
    assert catalog.index.ntotal == info["counts"]["windows"] == catalog.window_ids.shape[0] == 8 * 7
    assert set(catalog.window_work_ids.tolist()) == set(range(8))


@pytest.mark.slow  # FluidSynth renders (unrelated_music)
def test_exact_excerpt_is_blocked_and_unrelated_audio_passes(catalog, unrelated) -> None:
    work = catalog.works[3]
    audio = read_audio(work.path)
    start = int(2.3 * SR)
    verdict = check_asset(catalog, audio.samples[start:start + 5 * SR], SR)
    assert verdict.blocked and not verdict.calibrated and verdict.threshold == DEFAULT_THRESHOLD
    best = verdict.top[0]
    assert best.work_id == work.work_id and best.title == work.title and best.path == work.path
    assert abs(best.work_offset_s - 2.3) < 0.1 and best.query_offset_s == 0.0
    assert best.fingerprint_score > 0.3 and best.channel == "fingerprint" and best.alignment_score > 0.8
    assert best.embedding_score is None  # the uncalibrated fusion leaves the embedder out: never computed
    record = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))  # provenance-safe JSON
    assert record["catalog"] == "ref@v1" and record["top"][0]["work_id"] == work.work_id
    assert "matches work 3" in record["reason"]

    passed = check_asset(catalog, unrelated(6.0), SR)
    assert not passed.blocked and passed.top  # still shows the nearest works, for the record
    assert len(search(catalog, unrelated(6.0), SR, k=2)) == 2


def test_threshold_is_the_smallest_value_meeting_the_target() -> None:
    negatives = np.arange(200, dtype=np.float64)  # 0..199
    t = threshold_for(negatives, 0.01)  # two false positives allowed: 198 and 199
    assert 197 < t <= np.nextafter(197.0, np.inf)
    assert np.mean(negatives >= t) <= 0.01 and np.mean(negatives >= 197) > 0.01


def test_incremental_add_grows_the_index_and_v1_still_answers(catalog, embedder, works_dir, tmp_path) -> None:
    extra = tmp_path / "extra"
    synthesize(extra, n=2, seed=77, duration_s=4.0, sample_rate=SR)
    shutil.copy(works_dir / "clip_0000.wav", extra / "dup.wav")  # already in the catalog
    v2 = add_works(extra, "ref", get_settings(), embedder)
    assert v2.version == 2 and len(v2.added) == 2 and [Path(s).name for s in v2.skipped] == ["dup.wav"]
    assert v2.index.ntotal == catalog.index.ntotal + 2 * 3
    assert np.array_equal(v2.window_ids, np.arange(v2.index.ntotal))
    assert not v2.calibrated  # a calibration describes the works it was measured on
    new_work = read_audio(extra / "clip_0001.wav")
    assert check_asset(v2, new_work.samples, SR).top[0].work_id == 9

    v1 = load_catalog("ref", 1)
    v1.use_embedder(embedder)
    assert v1.index.ntotal == catalog.index.ntotal
    assert check_asset(v1, read_audio(catalog.works[1].path).samples, SR).top[0].work_id == 1


def test_a_different_embedder_is_refused(catalog, works_dir) -> None:
    with pytest.raises(CatalogError, match="built with embedder"):
        add_works(works_dir, "ref", get_settings(), None)
