"""Continuation prompts: the tail of played audio as EnCodec codes in the decode engine's layout."""

from __future__ import annotations

import numpy as np
import pytest

from musicops.models.continuation import encode_audio, prompt_codes
from musicops.models.musicgen import TransformersMusicGen


@pytest.fixture(scope="module")
def tiny() -> TransformersMusicGen:
    import torch

    torch.set_num_threads(1)
    return TransformersMusicGen.from_preset("musicgen-tiny")


def audio(seconds: float, rate: int = 32000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.shape)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def test_prompt_codes_are_the_encoded_tail(tiny: TransformersMusicGen):
    import torch

    codec = tiny.model.audio_encoder
    x = audio(3.0)
    codes = prompt_codes(codec, x, tiny.sample_rate, 1.0)
    assert codes.dtype == torch.long
    assert tuple(codes.shape) == (tiny.num_codebooks, 50)  # 1 s at 50 Hz
    assert int(codes.min()) >= 0 and int(codes.max()) < 2048
    assert torch.equal(codes, encode_audio(codec, x[-32000:], tiny.sample_rate))
    # the decode engine's codes layout: EnCodec decodes them to exactly the tail's length
    with torch.inference_mode():
        decoded = codec.decode(codes[None, None], [None]).audio_values
    assert decoded.shape[-1] == 32000


def test_tail_rounds_up_to_whole_frames_and_is_capped(tiny: TransformersMusicGen):
    codec = tiny.model.audio_encoder
    x = audio(1.0)
    assert prompt_codes(codec, x, tiny.sample_rate, 0.11).shape[-1] == 6  # ceil(5.5)
    assert prompt_codes(codec, x, tiny.sample_rate, 10.0).shape[-1] == 50  # all the audio there is
    with pytest.raises(ValueError):
        prompt_codes(codec, x[:100], tiny.sample_rate, 1.0)


def test_stereo_interleaves_and_other_rates_resample(tiny: TransformersMusicGen):
    import torch

    codec = tiny.model.audio_encoder
    x = audio(1.0, channels=2)
    codes = prompt_codes(codec, x, tiny.sample_rate, 0.5, audio_channels=2)
    assert tuple(codes.shape) == (2 * tiny.num_codebooks, 25)
    assert torch.equal(codes[::2], encode_audio(codec, x[-16000:, 0], tiny.sample_rate))
    assert torch.equal(codes[1::2], encode_audio(codec, x[-16000:, 1], tiny.sample_rate))
    # 48 kHz audio: the same 0.5 s tail, resampled before encoding
    assert prompt_codes(codec, audio(1.0, rate=48000), 48000, 0.5).shape[-1] == 25
