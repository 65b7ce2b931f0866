"""Turn a dataset manifest into training examples: caption tokens + EnCodec codes, delay-patterned.

Audio is read with the same checked reader ingest uses, resampled to the model's rate (scipy's
polyphase resampler), mixed to mono, cut or padded to a fixed segment, then encoded once up front
(the codec is frozen during fine-tuning, so encoding per step would be wasted work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class EncodedDataset:
    """Fixed-size training tensors: captions, codes (N, K, T) and where they came from."""

    captions: list[str]
    codes: Any  # torch.LongTensor (N, K, T)
    sources: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def load_segment(path: str | Path, sample_rate: int, segment_s: float, channels: int = 1) -> np.ndarray:
    """Float32 audio at `sample_rate`, cut or zero-padded to exactly `segment_s` seconds: mono
    (frames,) by default; with `channels=2`, (frames, 2) (a mono source on both sides)."""
    from musicops.audio.convert import resample
    from musicops.audio.io import read_audio

    audio = read_audio(path)
    length = int(round(segment_s * sample_rate))
    if channels == 1:
        mono = resample(audio.mono(), audio.sample_rate, sample_rate)
        return mono[:length] if mono.shape[0] >= length else np.pad(mono, (0, length - mono.shape[0]))
    samples = np.asarray(audio.samples, dtype=np.float32)
    samples = samples if samples.ndim == 2 else samples[:, None]
    if samples.shape[1] == 1:
        samples = np.repeat(samples, channels, axis=1)
    elif samples.shape[1] != channels:
        raise ValueError(f"{path}: {samples.shape[1]} channels cannot train a {channels}-channel model")
    samples = resample(samples, audio.sample_rate, sample_rate, axis=0)[:length]
    return np.pad(samples, ((0, length - samples.shape[0]), (0, 0))).astype(np.float32)


def encode_manifest(model: Any, manifest: Any, segment_s: float, batch_size: int = 8) -> EncodedDataset:
    """Encode each manifest row's audio with the model's own EnCodec (frozen)."""
    import torch

    from musicops.models.musicgen import TransformersMusicGen

    assert isinstance(model, TransformersMusicGen)
    rows = manifest.to_dict("records") if hasattr(manifest, "to_dict") else list(manifest)
    if not rows:
        raise ValueError("the manifest has no rows to train on")
    captions = [str(row["caption"]) for row in rows]
    sources = [str(row["path"]) for row in rows]
    codes = []
    codec = model.model.audio_encoder
    channels = int(getattr(model.model.decoder.config, "audio_channels", 1))
    if channels > 1:  # stereo: each channel encoded on its own, codebooks interleaved left/right
        from musicops.models.continuation import encode_audio

        for path in sources:
            segment = load_segment(path, model.sample_rate, segment_s, channels)
            codes.append(encode_audio(codec, segment, model.sample_rate, channels)[None].cpu())
        return EncodedDataset(captions, torch.cat(codes).long(), sources)
    for start in range(0, len(rows), batch_size):
        chunk = [load_segment(path, model.sample_rate, segment_s) for path in sources[start:start + batch_size]]
        values = torch.from_numpy(np.stack(chunk))[:, None, :].to(model.device)
        with torch.inference_mode():
            encoded = codec.encode(values, bandwidth=max(codec.config.target_bandwidths))
        codes.append(encoded.audio_codes[0].cpu())  # (B, K, T)
    return EncodedDataset(captions, torch.cat(codes).long(), sources)


def delay_pattern_labels(codes: Any, pad_token_id: int, audio_channels: int = 1) -> Any:
    """(B, K, T) codes -> (B, T+D-1, K) labels where codebook k is shifted right by its delay.

    Mono: codebook k is delayed k steps (D = K). Stereo checkpoints interleave left/right codebooks
    (K = 2 x D), and both channels' codebook j share the delay j, i.e. k // audio_channels, as in
    transformers' `build_delay_pattern_mask`. The positions the delay leaves empty hold the pad
    token, which MusicGen's loss ignores, and match what the decoder sees at generation time.
    """
    import torch

    batch, books, frames = codes.shape
    if books % audio_channels:
        raise ValueError(f"{books} codebooks cannot be split over {audio_channels} audio channels")
    depth = books // audio_channels
    labels = torch.full((batch, frames + depth - 1, books), pad_token_id, dtype=torch.long)
    for k in range(books):
        delay = k // audio_channels
        labels[:, delay:delay + frames, k] = codes[:, k, :]
    return labels
