"""Landmark fingerprints: literal reuse survives shift, gain, noise and Vorbis; unrelated music does not match."""

from __future__ import annotations

import numpy as np
import pytest

from musicops.datasets.synth import plan_clip, render_clip
from musicops.evaluation.catalog.fingerprint import (
    FRAME_S,
    FingerprintDB,
    fingerprint,
    match,
    query_fingerprints,
)

SR = 16000
N_WORKS = 4


def _clips(seed: int, n: int, duration_s: float) -> list[np.ndarray]:
    return [render_clip(plan_clip(seed, i), seed, duration_s, SR) for i in range(n)]


@pytest.fixture(scope="module")
def works() -> list[np.ndarray]:
    return _clips(seed=3, n=N_WORKS, duration_s=9.0)


@pytest.fixture(scope="module")
def db(works: list[np.ndarray]) -> FingerprintDB:
    return FingerprintDB().extend([(i, fingerprint(w, SR)) for i, w in enumerate(works)])


def _noise(x: np.ndarray, rng: np.random.Generator, snr_db: float = 20.0) -> np.ndarray:
    power = float(np.mean(x.astype(np.float64) ** 2))
    return x + rng.standard_normal(x.shape[0]) * np.sqrt(power / 10 ** (snr_db / 10))


def _vorbis(x: np.ndarray, tmp_path) -> np.ndarray:
    from musicops.audio.encode import encode
    from musicops.audio.io import read_audio

    path = tmp_path / "q.ogg"
    path.write_bytes(encode(x, SR, "ogg"))
    return read_audio(path).mono()


TRANSFORMS = {
    "shift": lambda x, rng, tmp: x,
    "gain_up": lambda x, rng, tmp: x * 10 ** (6 / 20),
    "gain_down": lambda x, rng, tmp: x * 10 ** (-6 / 20),
    "noise_20db": lambda x, rng, tmp: _noise(x, rng),
    "vorbis": lambda x, rng, tmp: _vorbis(x, tmp),
}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_literal_reuse_is_found_at_the_right_offset(works, db, transform, tmp_path) -> None:
    rng = np.random.default_rng(7)
    for work_id, audio in enumerate(works):
        start = int(rng.integers(0, audio.shape[0] - 5 * SR))  # sample-exact, not frame-aligned
        query = TRANSFORMS[transform](audio[start:start + 5 * SR], rng, tmp_path)
        found = match(query_fingerprints(query, SR), db)
        assert found, f"{transform}: no match for work {work_id}"
        best = found[0]
        assert best.work_id == work_id, (transform, work_id, found[:3])
        assert abs(best.offset_s - start / SR) <= 2 * FRAME_S, (transform, best, start / SR)
        assert best.score >= 0.2, (transform, best)
        others = [m.score for m in found[1:]]
        assert max(others, default=0.0) < best.score / 3, (transform, found[:3])


def test_unrelated_music_scores_low(db) -> None:
    rng = np.random.default_rng(1)
    unrelated = _clips(seed=99, n=6, duration_s=6.0)
    scores = []
    for clip in unrelated:
        found = match(query_fingerprints(_noise(clip[: 5 * SR], rng, 30.0), SR), db)
        scores.append(found[0].score if found else 0.0)
    assert max(scores) < 0.075, scores  # the uncalibrated gate blocks at 0.075


def test_partial_reuse_inside_a_long_asset_is_not_diluted(works, db) -> None:
    """A 5 s quote inside 20 s of other music scores like the quote alone (windowed score)."""
    filler = _clips(seed=98, n=1, duration_s=15.0)[0]
    quote = works[2][2 * SR: 7 * SR]
    asset = np.concatenate([filler[: 10 * SR], quote, filler[10 * SR:]])
    best = match(query_fingerprints(asset, SR), db)[0]
    assert best.work_id == 2 and best.score >= 0.2, best
    assert abs(best.offset_s - (2.0 - 10.0)) <= 2 * FRAME_S  # work time - asset time


def test_fingerprint_is_deterministic_and_handles_silence_and_stereo(works) -> None:
    a, b = fingerprint(works[0], SR), fingerprint(works[0], SR)
    assert np.array_equal(a.hashes, b.hashes) and np.array_equal(a.times, b.times)
    assert a.hashes.dtype == np.uint32 and a.times.dtype == np.int32 and len(a) > 500
    assert len(fingerprint(np.zeros(SR * 2, np.float32), SR)) == 0
    stereo = np.stack([works[0], works[0]], axis=1)
    assert np.array_equal(fingerprint(stereo, SR).hashes, a.hashes)
    with pytest.raises(ValueError, match="NaN"):
        fingerprint(np.full(SR, np.nan, np.float32), SR)


def test_database_round_trips_through_npz(db, tmp_path) -> None:
    path = tmp_path / "fp.npz"
    db.save(path)
    loaded = FingerprintDB.load(path)
    assert path.exists() and len(loaded) == len(db) and loaded.work_set == set(range(N_WORKS))
    assert np.array_equal(loaded.keys, db.keys) and np.all(np.diff(loaded.keys.astype(np.int64)) >= 0)
    assert match(fingerprint(np.zeros(SR, np.float32), SR), loaded) == []
