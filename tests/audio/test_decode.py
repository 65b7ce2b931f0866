"""Stored audio is decoded with the same checks as files: no second, laxer reader."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from musicops.audio.io import AudioError, decode_audio, read_audio
from musicops.store.assets import AssetCorruptError, AssetStore


def _wav(samples: np.ndarray, rate: int = 8000, fmt: str = "WAV", subtype: str = "FLOAT") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def test_store_audio_matches_the_file_reader(tmp_path) -> None:
    tone = (0.5 * np.sin(np.arange(800) / 5.0)).astype(np.float32)
    data = _wav(tone)
    store = AssetStore(tmp_path / "assets")
    stored = store.put(data, "wav")
    audio = store.read_audio(stored.sha256, "wav")
    from_file = read_audio(stored.path)
    assert audio.sample_rate == 8000 and audio.samples.shape == (800, 1) and audio.samples.dtype == np.float32
    np.testing.assert_array_equal(audio.samples, from_file.samples)
    np.testing.assert_array_equal(audio.samples[:, 0], tone)


def test_decode_applies_read_audios_checks(tmp_path) -> None:
    with pytest.raises(AudioError, match="empty file"):
        decode_audio(b"", "asset", "wav")
    with pytest.raises(AudioError, match="not a readable audio file"):
        decode_audio(b"not audio at all", "asset", "wav")
    with pytest.raises(AudioError, match="mislabelled: extension .flac but content is WAV"):
        decode_audio(_wav(np.zeros(10, np.float32)), "asset", "flac")
    with pytest.raises(AudioError, match="contains 1 NaN/Inf samples"):
        decode_audio(_wav(np.array([0.0, np.nan, 0.1], np.float32)), "asset", "wav")
    with pytest.raises(AudioError, match="too large"):
        decode_audio(_wav(np.zeros(10, np.float32)), "asset", "wav", max_bytes=10)


def test_a_damaged_asset_is_refused_before_decoding(tmp_path) -> None:
    store = AssetStore(tmp_path / "assets")
    stored = store.put(_wav(np.zeros(100, np.float32)), "wav")
    raw = bytearray(stored.path.read_bytes())
    raw[-1] ^= 0xFF
    stored.path.write_bytes(bytes(raw))
    with pytest.raises(AssetCorruptError):
        store.read_audio(stored.sha256, "wav")
