"""The post-processing chain: loudness and true-peak guarantees, a real limiter, deterministic encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from musicops.audio.encode import encode, read_tags, truncate_utf8
from musicops.audio.io import AudioError
from musicops.audio.limiter import limit
from musicops.audio.measure import integrated_loudness, loudness_lufs, true_peak_dbtp
from musicops.audio.postprocess import PostProcessSettings, Processed, postprocess

SR = 32000
TARGET, CEILING = -14.0, -1.0


def _t(seconds: float, rate: int = SR) -> np.ndarray:
    return np.arange(int(seconds * rate)) / rate


def _at_loudness(x: np.ndarray, lufs: float, rate: int = SR) -> np.ndarray:
    return x * 10.0 ** ((lufs - integrated_loudness(x, rate)) / 20.0)


def _reference_true_peak(x: np.ndarray) -> float:
    """The textbook measurement, independent of the module: max |resample_poly(x, 4, 1)| in dB."""
    return 20.0 * np.log10(np.abs(resample_poly(np.asarray(x, np.float64), 4, 1, axis=0)).max())


def _assert_delivered(p: Processed) -> None:
    assert p.samples.dtype == np.float32 and p.samples.ndim == 2
    assert np.isfinite(p.samples).all()
    loudness = integrated_loudness(p.samples, p.sample_rate)  # pyloudnorm, not the module's meter
    assert abs(loudness - TARGET) <= 0.5, loudness
    assert abs(p.loudness_after - loudness) < 1e-3
    assert true_peak_dbtp(p.samples, p.sample_rate) <= CEILING
    assert _reference_true_peak(p.samples) <= CEILING
    assert p.true_peak_after <= CEILING


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _longest_flat_top(y: np.ndarray) -> int:
    """Longest run of consecutive samples sitting at the waveform's maximum |value| (clipping's mark)."""
    level = np.abs(y) >= 0.999 * np.abs(y).max()
    longest = run = 0
    for flag in level:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


def _sine_mix(seconds: float, peak: float) -> np.ndarray:
    t = _t(seconds)
    x = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 331 * t + 1.0) + 0.25 * np.sin(2 * np.pi * 1250 * t)
    return peak * x / np.abs(x).max()


def _drum_loop(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """High crest factor (kicks and clicks over a quiet pad): needs limiting to reach -14 LUFS."""
    t = _t(seconds)
    x = 0.05 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)
    for start in np.arange(0.0, seconds - 0.3, 0.5):
        i = int(start * SR)
        k = t[: int(0.25 * SR)]
        x[i: i + k.size] += 0.9 * np.sin(2 * np.pi * 55 * k) * np.exp(-k / 0.05)
        x[i: i + 64] += 0.8 * rng.standard_normal(64)
    return x


# --- the chain's guarantees ------------------------------------------------------------------------


def test_white_noise_at_minus_30_lufs_reaches_target_under_ceiling() -> None:
    x = _at_loudness(np.random.default_rng(0).standard_normal(5 * SR), -30.0)
    p = postprocess(x, SR)
    _assert_delivered(p)
    assert abs(p.loudness_before + 30.0) < 0.1
    assert p.gain_db > 15.0


def test_high_crest_material_is_limited_and_still_meets_both_targets() -> None:
    x = _drum_loop(4.0, np.random.default_rng(1))
    p = postprocess(x, SR)
    _assert_delivered(p)
    assert p.limiter_reduction_db > 3.0  # the limiter had real work to do


def test_loud_sine_mix_at_plus_6_dbfs_meets_targets_with_shape_preserved() -> None:
    x = _sine_mix(3.0, peak=2.0)  # +6 dBFS
    p = postprocess(x, SR)
    _assert_delivered(p)
    body = slice(SR // 10, -SR // 10)  # away from the fades
    assert _correlation(p.samples[body, 0], x[body]) > 0.95
    assert _longest_flat_top(p.samples[body, 0]) <= 5


def test_loud_square_wave_meets_targets() -> None:
    x = 2.0 * np.sign(np.sin(2 * np.pi * 110 * _t(3.0)))  # Gibbs overshoot between samples once filtered
    p = postprocess(x, SR)
    _assert_delivered(p)


def test_limiter_reduces_plus_6_dbfs_input_without_clipping() -> None:
    x = _sine_mix(3.0, peak=2.0)
    p = postprocess(x, SR, PostProcessSettings(target_lufs=None))  # limiter only: it must do the work
    assert p.limiter_reduction_db >= 6.0
    assert p.true_peak_after <= CEILING and _reference_true_peak(p.samples) <= CEILING
    body = slice(SR // 10, -SR // 10)
    assert _correlation(p.samples[body, 0], x[body]) > 0.99  # a gain change, not a distortion
    assert _longest_flat_top(p.samples[body, 0]) <= 5
    clipped = np.clip(x, -10 ** (CEILING / 20), 10 ** (CEILING / 20))
    assert _longest_flat_top(clipped[body]) > 20  # what hard clipping would have looked like


def test_quiet_sine_is_raised_to_target() -> None:
    p = postprocess(0.001 * np.sin(2 * np.pi * 1000 * _t(3.0)), SR)
    _assert_delivered(p)
    assert p.gain_db > 40.0 and p.limiter_reduction_db == 0.0


def test_stereo_is_processed_with_linked_gain() -> None:
    rng = np.random.default_rng(2)
    t = _t(4.0)
    x = np.stack([0.1 * rng.standard_normal(t.size), 0.3 * np.sin(2 * np.pi * 440 * t)], axis=1)
    p = postprocess(x, SR)
    assert p.samples.shape == x.shape
    _assert_delivered(p)
    body = slice(SR // 10, -SR // 10)
    ratio_in = np.std(x[body, 0]) / np.std(x[body, 1])
    ratio_out = np.std(p.samples[body, 0]) / np.std(p.samples[body, 1])
    assert ratio_out == pytest.approx(ratio_in, rel=0.02)  # one gain for both: the image does not move


def test_silence_passes_through_without_gain_or_nan() -> None:
    p = postprocess(np.zeros((2 * SR, 2), dtype=np.float32), SR)
    assert np.isfinite(p.samples).all() and not p.samples.any()
    assert p.gain_db == 0.0 and p.limiter_reduction_db == 0.0
    assert p.loudness_before == p.loudness_after == -np.inf
    assert p.true_peak_after == -np.inf


def test_too_short_clip_skips_gain() -> None:
    x = 0.1 * np.sin(2 * np.pi * 440 * _t(0.2))  # shorter than one 400 ms gating block
    p = postprocess(x, SR)
    assert p.loudness_before == -np.inf and p.gain_db == 0.0
    assert p.samples.shape == (x.size, 1)


def test_dc_offset_is_removed() -> None:
    x = 0.1 * np.sin(2 * np.pi * 220 * _t(3.0)) + 0.2
    p = postprocess(x, SR)
    assert abs(float(p.samples.mean())) < 1e-3
    _assert_delivered(p)


def test_resampling_32k_to_44k1_gives_the_right_length() -> None:
    x = 0.1 * np.random.default_rng(3).standard_normal(3 * SR)
    p = postprocess(x, SR, PostProcessSettings(sample_rate=44100))
    assert p.sample_rate == 44100 and p.samples.shape == (3 * 44100, 1)
    _assert_delivered(p)


def test_fades_take_first_and_last_samples_to_zero() -> None:
    x = 0.1 * np.random.default_rng(4).standard_normal(2 * SR)
    p = postprocess(x, SR)
    assert p.samples[0, 0] == 0.0 and p.samples[-1, 0] == 0.0
    assert np.abs(p.samples[:5]).max() < 0.02 * np.abs(p.samples).max()
    unfaded = postprocess(x, SR, PostProcessSettings(fade_in_ms=0, fade_out_ms=0))
    assert unfaded.samples[0, 0] != 0.0 and unfaded.samples[-1, 0] != 0.0


def test_mono_1d_input_returns_2d_float32_and_records_settings() -> None:
    settings = PostProcessSettings(target_lufs=-16.0, true_peak_dbtp=-2.0)
    p = postprocess(0.1 * np.sin(2 * np.pi * 440 * _t(1.0)), SR, settings)
    assert p.samples.shape == (SR, 1) and p.samples.dtype == np.float32
    assert p.settings is settings and PostProcessSettings(**settings.to_dict()) == settings
    assert abs(p.loudness_after + 16.0) < 0.1 and p.true_peak_after <= -2.0
    assert set(p.metrics()) == {"loudness_before", "loudness_after", "true_peak_before", "true_peak_after",
                                "gain_db", "limiter_reduction_db"}


def test_non_finite_input_is_refused() -> None:
    x = np.zeros(SR)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        postprocess(x, SR)


# --- measurements --------------------------------------------------------------------------------


def test_loudness_equals_pyloudnorm() -> None:
    rng = np.random.default_rng(5)
    for rate, shape in ((SR, (3 * SR,)), (SR, (3 * SR + 7, 2)), (44100, (2 * 44100, 2)), (16000, (20000,))):
        x = 0.1 * rng.standard_normal(shape)
        assert loudness_lufs(x, rate) == pytest.approx(integrated_loudness(x, rate), abs=1e-6)


def test_true_peak_matches_resample_poly_and_sees_inter_sample_peaks() -> None:
    noise = 0.1 * np.random.default_rng(6).standard_normal((SR, 2))
    assert true_peak_dbtp(noise, SR) == pytest.approx(_reference_true_peak(noise), abs=0.01)
    n = np.arange(SR)
    sine = np.sin(np.pi / 2 * n + np.pi / 4)  # fs/4 at 45 degrees: samples at 0.707, peaks at 1.0
    sample_peak = 20 * np.log10(np.abs(sine).max())
    assert true_peak_dbtp(sine, SR) > sample_peak + 2.5
    assert true_peak_dbtp(np.zeros(100), SR) == -np.inf


# --- the limiter alone ----------------------------------------------------------------------------


def test_limiter_catches_inter_sample_peaks() -> None:
    n = np.arange(SR)
    x = np.sin(np.pi / 2 * n + np.pi / 4)  # sample peak -3 dBFS (under the ceiling), true peak ~0 dBTP
    y, reduction = limit(x, SR, CEILING)
    assert 20 * np.log10(np.abs(x).max()) < CEILING  # a sample-peak limiter would have done nothing
    assert true_peak_dbtp(y, SR) <= CEILING and _reference_true_peak(y) <= CEILING
    assert reduction > 0.9
    assert y.shape == (SR, 1) and y.dtype == np.float32


def test_limiter_looks_ahead_and_releases_smoothly() -> None:
    t = _t(1.0)
    x = 0.1 * np.sin(2 * np.pi * 440 * t)
    burst = slice(SR // 2, SR // 2 + 320)
    x[burst] += 0.9 * np.sin(2 * np.pi * 1000 * t[:320])
    y, reduction = limit(x, SR, -6.0, lookahead_ms=5.0, release_ms=60.0)
    gain = np.abs(y[:, 0]) / np.maximum(np.abs(x), 1e-9)
    ok = np.abs(x) > 0.02  # where the gain is well defined
    before, during = SR // 2 - int(0.003 * SR), SR // 2 + 100
    assert gain[before - 40: before + 40][ok[before - 40: before + 40]].max() < 0.95  # ramp starts early
    far = slice(SR // 10, SR * 4 // 10)
    assert np.abs(gain[far][ok[far]] - 1.0).max() < 1e-6  # untouched far from the burst
    assert gain[during] < 10 ** (-4.5 / 20)
    after = SR // 2 + 320 + int(0.3 * SR)
    assert gain[after - 50: after + 50][ok[after - 50: after + 50]].min() > 0.9  # released again
    smooth = np.abs(np.diff(gain[ok & np.roll(ok, 1)]))
    assert smooth.max() < 0.05  # no step in the gain: not a clipper
    assert reduction > 5.0 and true_peak_dbtp(y, SR) <= -6.0


def test_limiter_leaves_audio_under_the_ceiling_untouched() -> None:
    x = 0.1 * np.sin(2 * np.pi * 440 * _t(1.0))
    y, reduction = limit(x, SR, CEILING)
    assert reduction == 0.0
    np.testing.assert_array_equal(y[:, 0], x.astype(np.float32))


# --- encoding --------------------------------------------------------------------------------------


TAGS = {"title": "a calm piano — ünïcode", "software": "musicops test", "asset_id": "abc123",
        "seed": "7", "params": '{"top_k": 250}'}


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_encode_is_deterministic_and_round_trips_tags_and_audio(fmt: str, tmp_path) -> None:
    x = postprocess(0.1 * np.random.default_rng(7).standard_normal((SR, 2)), SR).samples
    first, second = encode(x, SR, fmt, TAGS), encode(x.copy(), SR, fmt, dict(reversed(TAGS.items())))
    assert first == second
    assert read_tags(first) == TAGS
    path = tmp_path / f"clip.{fmt}"
    path.write_bytes(first)
    assert read_tags(path) == TAGS
    decoded, rate = sf.read(io.BytesIO(first), dtype="float32", always_2d=True)
    assert rate == SR and decoded.shape == x.shape
    assert np.abs(decoded - x).max() < 2.0 ** -22  # PCM_24
    assert encode(x, SR, fmt, {**TAGS, "seed": "8"}) != first


def test_encode_keeps_a_plain_comment_next_to_extra_tags() -> None:
    x = np.zeros((SR // 10, 1), dtype=np.float32)
    assert read_tags(encode(x, SR, "flac", {"comment": "hello"})) == {"comment": "hello"}
    both = {"comment": "hello", "model": "models:/tiny/1"}
    assert read_tags(encode(x, SR, "wav", both)) == both


def test_encode_ogg_is_deterministic_too() -> None:
    x = postprocess(0.1 * np.random.default_rng(8).standard_normal(SR), SR).samples
    first = encode(x, SR, "ogg", TAGS)
    assert first == encode(x, SR, "ogg", TAGS)
    assert read_tags(first) == TAGS
    decoded, rate = sf.read(io.BytesIO(first), always_2d=True)
    assert rate == SR and abs(decoded.shape[0] - SR) < 1024


def test_encode_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="unsupported format"):
        encode(np.zeros(10), SR, "mp3")
    with pytest.raises(AudioError, match="NaN"):
        encode(np.full(10, np.nan), SR, "wav")


# What libsndfile keeps per field: WAV INFO 2045 bytes (2 KiB read buffer), 'software' <= 96 here.
WAV_FIELD_BYTES = 2045


@pytest.mark.parametrize("char", ["x", "é", "漢", "🎵"])  # 1, 2, 3 and 4 bytes of UTF-8
def test_long_tags_are_cut_by_bytes_on_a_character_boundary_never_failing_the_clip(char: str) -> None:
    x = np.zeros((SR // 10, 1), dtype=np.float32)
    title = char * 1000 + "tail" + char * 5000
    tags = {"title": title, "software": "musicops " + "v" * 500, "seed": "7", "model": "models:/tiny/1"}
    for fmt in ("wav", "flac", "ogg"):
        written = read_tags(encode(x, SR, fmt, tags))
        assert title.startswith(written["title"]) and written["title"]
        assert written["software"].startswith("musicops v") and len(written["software"].encode()) <= 96
        assert written["seed"] == "7" and written["model"] == "models:/tiny/1"  # the JSON comment still parses
        if fmt == "wav":
            size = len(written["title"].encode())
            assert WAV_FIELD_BYTES - len(char.encode()) < size <= WAV_FIELD_BYTES, size
        else:
            assert written["title"] == title  # FLAC and Vorbis comments hold a 24 kB title whole


def test_tag_cut_at_exactly_the_limit() -> None:
    x = np.zeros((SR // 10, 1), dtype=np.float32)
    fits = "a" + "🎵" * ((WAV_FIELD_BYTES - 1) // 4)  # 2045 bytes exactly: kept whole
    assert len(fits.encode()) == WAV_FIELD_BYTES
    assert read_tags(encode(x, SR, "wav", {"title": fits}))["title"] == fits
    # One byte more splits the last emoji: it goes whole, never as a broken sequence.
    assert read_tags(encode(x, SR, "wav", {"title": "ab" + fits[1:]}))["title"] == "ab" + fits[1:-1]
    assert truncate_utf8("🎵🎵", 7) == "🎵" and truncate_utf8("🎵🎵", 8) == "🎵🎵" and truncate_utf8("é", 1) == ""


def test_extra_tags_overflowing_the_wav_comment_are_shortened_and_stay_json() -> None:
    x = np.zeros((SR // 10, 1), dtype=np.float32)
    tags = {"asset_id": "abc", "params": "p" * 4000, "model": "m" * 100, "license": "CC0"}  # no INFO license
    written = read_tags(encode(x, SR, "wav", tags))
    assert written["asset_id"] == "abc" and written["model"] == "m" * 100 and written["license"] == "CC0"
    assert 1500 < len(written["params"]) < 2045 and set(written["params"]) == {"p"}
    assert read_tags(encode(x, SR, "flac", tags)) == tags  # FLAC holds it whole


def test_unstorable_characters_are_dropped_or_replaced_not_fatal() -> None:
    x = np.zeros((SR // 10, 1), dtype=np.float32)
    assert read_tags(encode(x, SR, "wav", {"title": "a\x00b\ud800c"}))["title"] == "ab?c"
