"""Quality checks: each one fails on the artifact it exists for and passes on a delivered clip."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from musicops.audio.checks import (
    CHECK_NAMES,
    NOT_COMPUTED,
    CheckThresholds,
    failed,
    run_checks,
    spectral_flatness,
    thresholds_for,
)
from musicops.audio.measure import integrated_loudness
from musicops.audio.postprocess import PostProcessSettings, postprocess

SR = 32000
SECONDS = 3.0


def _music(seconds: float = SECONDS) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
            + 0.02 * rng.standard_normal(t.size))


def _good() -> np.ndarray:
    return postprocess(_music(), SR).samples


def _by_name(results) -> dict:
    return {r.name: r for r in results}


def _check(samples: np.ndarray, name: str, expected: float | None = SECONDS, **thresholds):
    return _by_name(run_checks(samples, SR, expected, CheckThresholds(**thresholds)))[name]


def test_a_processed_clip_passes_every_check_in_order() -> None:
    results = run_checks(_good(), SR, SECONDS, thresholds_for(PostProcessSettings()))
    assert [r.name for r in results] == list(CHECK_NAMES)
    assert failed(results) == [], [r.detail for r in results]
    for r in results:  # every detail names the measured value and the limit
        assert re.search(r"\d", r.detail) and r.limit, r
        json.dumps(r.to_dict(), allow_nan=False)


def test_nan_fails_finite_and_marks_the_rest_not_computed() -> None:
    x = _good().copy()
    x[100, 0] = np.nan
    x[200, 0] = np.inf
    results = _by_name(run_checks(x, SR, SECONDS))
    assert not results["finite"].passed and results["finite"].value == 2.0
    for name in ("silence", "clipping", "dc_offset", "loudness", "true_peak", "spectral_flatness"):
        assert not results[name].passed and results[name].detail == NOT_COMPUTED
    assert results["duration"].passed  # still measurable from the shape


def test_silence_fails() -> None:
    r = _check(np.zeros((int(SECONDS * SR), 1)), "silence")
    assert not r.passed and r.value == -np.inf and "-60.0" in r.detail
    assert r.to_dict()["value"] is None  # JSON has no -inf
    json.dumps(r.to_dict(), allow_nan=False)


def test_clipped_square_fails_clipping() -> None:
    square = np.sign(np.sin(2 * np.pi * 100 * np.arange(int(SECONDS * SR)) / SR))
    r = _check(square, "clipping")
    assert not r.passed and r.value > 0.9


def test_dc_offset_fails() -> None:
    r = _check(_good() + 0.2, "dc_offset")
    assert not r.passed and r.value == pytest.approx(0.2, abs=1e-3)
    assert _check(_good(), "dc_offset").passed


def test_quiet_clip_fails_loudness() -> None:
    quiet = _music() * 10 ** ((-30.0 - integrated_loudness(_music(), SR)) / 20)
    r = _check(quiet, "loudness")
    assert not r.passed and r.value == pytest.approx(-30.0, abs=0.01)
    assert _check(quiet, "loudness", loudness_range_lufs=None).passed  # None = informational


def test_over_the_ceiling_fails_true_peak() -> None:
    full_scale = 0.99 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    r = _check(full_scale, "true_peak", expected=None)
    assert not r.passed and r.value > -1.0
    assert _check(full_scale, "true_peak", expected=None, true_peak_ceiling_dbtp=None).passed


def test_short_clip_fails_duration() -> None:
    short = _good()[: int(0.8 * SECONDS * SR)]  # 20% short
    r = _check(short, "duration")
    assert not r.passed and "20.0% off" in r.detail
    assert _check(_good()[: int(0.97 * SECONDS * SR)], "duration").passed  # within 5%
    assert _check(short, "duration", expected=None).passed


def test_spectral_flatness_flags_noise_only_when_asked() -> None:
    noise = 0.1 * np.random.default_rng(1).standard_normal(int(SECONDS * SR))
    assert spectral_flatness(noise) == pytest.approx(0.56, abs=0.03)
    assert spectral_flatness(_music()) < 0.1
    assert spectral_flatness(np.zeros(SR)) is None
    assert _check(noise, "spectral_flatness").passed  # informational by default
    assert not _check(noise, "spectral_flatness", spectral_flatness_max=0.3).passed
    assert _check(_good(), "spectral_flatness", spectral_flatness_max=0.3).passed


def test_thresholds_follow_the_postprocess_settings() -> None:
    t = thresholds_for(PostProcessSettings(target_lufs=-16.0, true_peak_dbtp=-2.0), tolerance_lu=1.0)
    assert t.loudness_range_lufs == (-17.0, -15.0) and t.true_peak_ceiling_dbtp == -2.0
    t = thresholds_for(PostProcessSettings(target_lufs=None, true_peak_dbtp=None))
    assert t.loudness_range_lufs is None and t.true_peak_ceiling_dbtp is None


def test_failed_lists_only_failures() -> None:
    results = run_checks(np.zeros(SR), SR, 2.0)
    assert {r.name for r in failed(results)} == {"silence", "loudness", "duration"}


def test_audio_error_survives_pickling() -> None:
    """Worker processes send failures back pickled; an AudioError that cannot be rebuilt breaks the pool."""
    import pickle

    from musicops.audio.io import AudioError

    again = pickle.loads(pickle.dumps(AudioError("/clips/a.wav", "no audio frames")))
    assert isinstance(again, AudioError)
    assert (again.path, again.problem, str(again)) == ("/clips/a.wav", "no audio frames", "/clips/a.wav: no audio frames")
