"""Streaming EnCodec decoding: chunks add up to the whole-clip decode, with inaudible boundaries.

Bounds asserted (measured on the tiny preset's random-init EnCodec, 1 thread: max |diff| ~1e-7,
SNR ~138 dB, boundary jump / within-chunk 99.9th percentile 0.27, as in the full decode itself):
- same length as the full decode (and as `decode_audio` when trimmed to a duration);
- max |stream - full| <= 1e-5 and SNR >= 100 dB;
- at every chunk boundary |x[n] - x[n-1]| <= the 99.9th percentile of |diff| within chunks.
"""

from __future__ import annotations

import numpy as np
import pytest

from musicops.models.base import GenerationParams
from musicops.models.codec_stream import StreamingCodecDecoder, decode_stream
from musicops.models.musicgen import TransformersMusicGen

MAX_ABS_DIFF = 1e-5
MIN_SNR_DB = 100.0
MAX_BOUNDARY_RATIO = 1.0


@pytest.fixture(scope="module")
def tiny() -> TransformersMusicGen:
    import torch

    torch.set_num_threads(1)
    return TransformersMusicGen.from_preset("musicgen-tiny")


def random_codes(books: int, frames: int, seed: int = 0):
    import torch

    return torch.randint(0, 2048, (books, frames), generator=torch.Generator().manual_seed(seed))


def full_decode(codec, codes) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return codec.decode(codes[None, None], [None]).audio_values[0, 0].numpy()


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((other - reference) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference ** 2)) / noise)


def boundary_ratio(chunks: list[np.ndarray]) -> float:
    """Largest sample step at a chunk boundary over the 99.9th percentile step inside chunks."""
    signal = np.concatenate(chunks)[:, 0]
    steps = np.abs(np.diff(signal))
    edges = np.cumsum([chunk.shape[0] for chunk in chunks])[:-1]
    inside = np.delete(steps, edges - 1)
    return float(steps[edges - 1].max() / np.percentile(inside, 99.9))


def assert_matches(chunks: list[np.ndarray], full: np.ndarray) -> None:
    stream = np.concatenate(chunks)[:, 0]
    assert stream.shape == full.shape
    assert float(np.abs(stream - full).max()) <= MAX_ABS_DIFF
    assert snr_db(full, stream) >= MIN_SNR_DB
    assert boundary_ratio(chunks) <= MAX_BOUNDARY_RATIO


@pytest.mark.parametrize("frames_per_push", [1, 7])
def test_chunks_equal_the_full_decode(tiny: TransformersMusicGen, frames_per_push: int):
    codec = tiny.model.audio_encoder
    codes = random_codes(tiny.num_codebooks, 120)
    chunks = decode_stream(codec, codes, frames_per_push)
    assert len(chunks) >= 10
    assert all(chunk.dtype == np.float32 and chunk.shape[1] == 1 for chunk in chunks)
    assert_matches(chunks, full_decode(codec, codes))


def test_generated_codes_trimmed_like_decode_audio(tiny: TransformersMusicGen):
    """Codes from the decode engine, streamed with the clip's sample count: what `decode_audio` gives."""
    engine = tiny.engine()
    params = GenerationParams(duration_s=1.5)
    codes = engine.decode_codes(["calm piano"], params, 3).codes[0]
    target = round(params.duration_s * tiny.sample_rate)
    chunks = decode_stream(tiny.model.audio_encoder, codes, 1, total_samples=target)
    stream = np.concatenate(chunks)
    reference = engine.decode_audio([codes], [params.duration_s])[0]
    assert stream.shape == reference.shape == (target, 1)
    assert float(np.abs(stream - reference).max()) <= MAX_ABS_DIFF
    assert snr_db(reference[:, 0], stream[:, 0]) >= MIN_SNR_DB


def test_time_to_first_audio(tiny: TransformersMusicGen):
    stream = StreamingCodecDecoder(tiny.model.audio_encoder, chunk_frames=5, lookahead_frames=2)
    codes = random_codes(tiny.num_codebooks, 40)
    need = stream.first_chunk_frames
    assert need == 5 + 2 + stream.conv_right
    assert stream.latency_samples == (need - 5) * stream.hop
    for frame in range(need - 1):
        assert stream.push(codes[:, frame:frame + 1]) == []
    (first,) = stream.push(codes[:, need - 1:need])
    assert first.shape == (5 * stream.hop, 1)
    # later chunks come every chunk_frames frames
    assert [c.shape[0] for c in stream.push(codes[:, need:need + 10])] == [5 * stream.hop] * 2


def test_stereo_interleaved_codebooks(tiny: TransformersMusicGen):
    """Stereo MusicGen interleaves the channels' codebooks; each channel decodes on its own."""
    import torch

    codec = tiny.model.audio_encoder
    left, right = random_codes(tiny.num_codebooks, 60, 1), random_codes(tiny.num_codebooks, 60, 2)
    codes = torch.stack([left, right], dim=1).reshape(2 * tiny.num_codebooks, 60)
    chunks = decode_stream(codec, codes, 3, audio_channels=2)
    stream = np.concatenate(chunks)
    assert stream.shape == (60 * 640, 2)
    for channel, part in enumerate((left, right)):
        assert float(np.abs(stream[:, channel] - full_decode(codec, part)).max()) <= MAX_ABS_DIFF


def test_non_causal_codec():
    """MusicGen's released 32 kHz EnCodec uses non-causal convolutions (look-ahead in the first conv)
    and a 2-layer LSTM: same bounds on a small random one of that layout."""
    import torch
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=32, num_filters=4,
                           num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=2,
                           codebook_size=2048, target_bandwidths=[2.2], normalize=False, use_causal_conv=False)
    codec = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape))
    codes = random_codes(4, 100)
    stream = StreamingCodecDecoder(codec)
    assert stream.conv_right == 3  # kernel 7, centred
    chunks = decode_stream(codec, codes, 2)
    assert_matches(chunks, full_decode(codec, codes))


def test_rejects_bad_options(tiny: TransformersMusicGen):
    codec = tiny.model.audio_encoder
    with pytest.raises(ValueError, match="crossfade"):
        StreamingCodecDecoder(codec, lookahead_frames=0, crossfade_samples=64)
    stream = StreamingCodecDecoder(codec)
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.push(random_codes(tiny.num_codebooks, 2))
