"""One resampler and one downmix: pinned, because embeddings and fingerprints depend on the exact samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from musicops.audio.convert import RESAMPLER, resample, to_mono


def _noise(n: int = 480) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(n).astype(np.float32)


def test_resample_is_scipy_polyphase_with_the_reduced_ratio() -> None:
    x = _noise()
    y = resample(x, 48_000, 32_000)
    assert RESAMPLER == "scipy.resample_poly"
    assert y.dtype == np.float32 and y.shape == (320,)
    np.testing.assert_array_equal(y, resample_poly(x, 2, 3))
    np.testing.assert_allclose(y[:4], [-0.054001, 0.313673, 0.143269, -0.303985], atol=1e-6)
    assert float(np.sum(y)) == pytest.approx(-8.05412, abs=1e-4)


def test_resample_keeps_float64_and_works_along_an_axis() -> None:
    x = np.stack([_noise().astype(np.float64), np.zeros(480)])  # channels first, as post-processing has it
    y = resample(x, 44_100, 48_000, axis=1)
    assert y.dtype == np.float64 and y.shape == (2, 480 * 160 // 147 + 1)
    np.testing.assert_array_equal(y[0], resample_poly(x[0], 160, 147))
    assert not y[1].any()


def test_equal_rates_return_the_input_and_bad_rates_are_refused() -> None:
    x = _noise()
    assert resample(x, 16_000, 16_000) is x
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16_000)


def test_to_mono_is_the_channel_mean_in_the_asked_dtype() -> None:
    x = _noise()
    stereo = np.stack([x, -0.5 * x], axis=1)
    mono = to_mono(stereo)
    assert mono.dtype == np.float32 and mono.shape == (480,)
    np.testing.assert_array_equal(mono, stereo.mean(axis=1))
    assert to_mono(stereo, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(to_mono(x), x)
    with pytest.raises(ValueError, match=r"\(frames, channels\)"):
        to_mono(np.zeros((2, 2, 2)))
