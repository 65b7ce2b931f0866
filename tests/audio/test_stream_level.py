"""Streaming leveller + limiter: chunking never changes the output, peaks stay under the ceiling,
loudness settles on the target with a bounded gain slew.

Bounds asserted: chunked output bit-identical to one-chunk output; true peak (measure.true_peak_dbtp)
<= -1.0 dBTP (measured -1.10 on a +6.9 dBTP input); short-term loudness of the settled tail within
1 LU of -14 LUFS; leveller gain steps <= max_slew_db_per_s per unit; latency 703 samples at 32 kHz
worst case (512-sample unit buffering + 16-sample interpolator reach + 11 x 16-sample look-ahead blocks).
"""

from __future__ import annotations

import numpy as np
import pytest

from musicops.audio.measure import loudness_lufs, true_peak_dbtp
from musicops.audio.stream_level import StreamLeveler, level_stream

RATE = 32000


def music(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    """Chords with gated noise (a hi-hat stand-in) and an over-full-scale transient, stereo."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t + p) for f, p in ((220, 0), (277, 1), (330, 2))) / 3
    noise = rng.standard_normal(t.shape) * (np.sin(2 * np.pi * 4 * t) > 0.7)
    x = level * (tones + 0.3 * noise)
    return np.stack([x, 0.8 * x], axis=1)


def random_chunks(x: np.ndarray, seed: int = 1) -> list[np.ndarray]:
    sizes = np.random.default_rng(seed).integers(1, 3000, x.shape[0])
    edges = np.cumsum(sizes)
    return np.split(x, edges[edges < x.shape[0]])


def test_chunking_never_changes_the_output():
    x = music(6)
    x[RATE * 2: RATE * 2 + 300] += 1.5  # transient: the limiter works
    x[RATE * 4:] *= 8  # a loud section: the leveller moves
    whole = level_stream([x], RATE, 2)
    chunked = level_stream(random_chunks(x), RATE, 2)
    assert whole.shape == chunked.shape == x.shape
    assert whole.dtype == np.float32
    assert np.array_equal(whole, chunked)


def test_true_peak_under_the_ceiling():
    x = music(4, level=0.5)
    x[RATE: RATE + 200] *= 6
    assert true_peak_dbtp(x, RATE) > 5.0
    leveler = StreamLeveler(RATE, 2, ceiling_dbtp=-1.0)
    out = np.concatenate([*(leveler.process(c) for c in random_chunks(x)), leveler.flush()])
    assert leveler.max_reduction_db > 3.0
    assert true_peak_dbtp(out, RATE) <= -1.0


def test_loudness_settles_on_target_with_bounded_slew():
    x = music(12, level=0.03)  # -35.7 LUFS: 21.7 dB to climb from 0 dB, at most 6 dB/s
    assert loudness_lufs(x, RATE) < -35.0
    leveler = StreamLeveler(RATE, 2, target_lufs=-14.0, max_slew_db_per_s=6.0, initial_gain_db=0.0)
    gains, parts = [], []
    for start in range(0, x.shape[0], leveler.unit):  # one unit per call: one gain step each
        parts.append(leveler.process(x[start:start + leveler.unit]))
        gains.append(leveler.gain_db)
    out = np.concatenate([*parts, leveler.flush()])
    steps = np.abs(np.diff(gains))
    assert steps.max() <= 6.0 * leveler.unit / RATE + 1e-9
    assert gains[0] <= 1.0 and gains[-1] > 20.0
    assert abs(loudness_lufs(out[-3 * RATE:], RATE) - (-14.0)) <= 1.0
    assert true_peak_dbtp(out, RATE) <= -1.0


def test_silence_is_not_boosted():
    leveler = StreamLeveler(RATE, 1, initial_gain_db=0.0)
    out = np.concatenate([leveler.process(np.zeros(RATE)), leveler.flush()])
    assert out.shape == (RATE, 1) and not out.any()
    assert leveler.gain_db == 0.0


def test_latency_is_stated():
    leveler = StreamLeveler(RATE, 1)
    assert leveler.latency_samples == 512 - 1 + 16 + (10 + 1) * 16
    x = music(2)[:, 0]
    lags = []
    emitted = 0
    for chunk in random_chunks(x):
        emitted += leveler.process(chunk).shape[0]
        lags.append(leveler.received - emitted)
    assert max(lags) <= leveler.latency_samples
    assert leveler.flush().shape[0] == leveler.received - emitted


def test_streamed_codec_audio_through_the_leveller():
    """The two streaming stages chained: EnCodec chunks in (a small random codec), limited chunks out."""
    import torch
    from transformers import EncodecConfig, EncodecModel

    from musicops.models.codec_stream import StreamingCodecDecoder

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = EncodecConfig(sampling_rate=RATE, audio_channels=1, hidden_size=32, num_filters=4,
                           num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=1,
                           codebook_size=2048, target_bandwidths=[2.2], normalize=False)
    codec = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape) * 20)  # loud: limiter works
    codes = torch.randint(0, 2048, (4, 100), generator=torch.Generator().manual_seed(0))
    decoder, leveler = StreamingCodecDecoder(codec), StreamLeveler(RATE, 1)
    out = [leveler.process(chunk) for start in range(0, 100, 5) for chunk in decoder.push(codes[:, start:start + 5])]
    out += [leveler.process(decoder.finish()), leveler.flush()]
    audio = np.concatenate(out)
    assert audio.shape == (100 * 640, 1)
    assert true_peak_dbtp(audio, RATE) <= -1.0


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        StreamLeveler(RATE, ceiling_dbtp=1.0)
    with pytest.raises(ValueError, match="channels"):
        StreamLeveler(RATE, 2).process(np.zeros(100))


def test_dc_offset_is_removed_as_in_postprocess():
    """The whole-clip chain removes DC; the stream chain must too (the dc_offset check runs on streams)."""
    from musicops.audio.checks import run_checks, thresholds_for
    from musicops.audio.postprocess import PostProcessSettings

    t = np.arange(RATE * 4) / RATE
    x = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.3).astype(np.float32)  # a large constant offset
    y = level_stream([x[i:i + 3000] for i in range(0, len(x), 3000)], RATE)
    assert abs(float(y[RATE:].mean())) < 1e-3  # after the first second: no offset left
    kept = level_stream([x], RATE, dc_removal=False)
    assert abs(float(kept[RATE:].mean())) > 0.05  # the check can fail: without removal the offset stays
    results = {r.name: r for r in run_checks(y, RATE, 4.0, thresholds_for(PostProcessSettings(), tolerance_lu=3.0))}
    assert results["dc_offset"].passed
