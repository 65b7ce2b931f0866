"""MusicGen continuation: the tail of the audio already played, as codes the next segment starts from.

Endless streams join segments without a gap by conditioning segment n+1 on the end of segment n:
MusicGen's decoder is given the EnCodec codes of that tail as a prompt and continues from it (what
`generate(input_values=...)` does in transformers, encoding with `audio_encoder.encode`). This module
does only the encoding: codes (codebooks, frames) in the same layout `DecodeEngine.decode_codes`
returns (delay pattern undone; stereo codebooks interleaved left/right), so the engine can lay the
delay pattern over them as a decoder prefix. Encoding the audio that was actually played (levelled
and limited) rather than reusing the raw codes keeps the next segment consistent with what the
listener heard, prompt changes included.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def encode_audio(codec: Any, samples: np.ndarray, sample_rate: int, audio_channels: int = 1) -> Any:
    """EnCodec codes (codebooks, frames) of float audio (frames,) or (frames, channels).

    Audio at another rate is resampled to the codec's; stereo models encode each channel on its
    own and interleave the codebooks (left, right, left, ...), as transformers' MusicGen does.
    """
    import torch

    from musicops.audio.convert import resample
    from musicops.audio.measure import channels_first

    x = channels_first(samples)  # (channels, frames), validated
    rate = int(codec.config.sampling_rate)
    if int(sample_rate) != rate:
        x = resample(x, int(sample_rate), rate, axis=1)
    if audio_channels == 1 and x.shape[0] > 1:
        x = x.mean(axis=0, keepdims=True)  # a mono model continues the downmix
    elif audio_channels == 2 and x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    elif x.shape[0] != audio_channels:
        raise ValueError(f"cannot encode {x.shape[0]} channels for a {audio_channels}-channel model")
    param = next(codec.parameters())
    codes = []
    with torch.inference_mode():
        for channel in x:
            values = torch.as_tensor(np.ascontiguousarray(channel), dtype=param.dtype, device=param.device)
            out = codec.encode(values[None, None], return_dict=True)
            if out.audio_codes.shape[0] != 1:
                raise ValueError("EnCodec chunking must be off (chunk_length=None) for MusicGen codes")
            codes.append(out.audio_codes[0, 0])  # (codebooks, frames)
    if len(codes) == 1:
        return codes[0]
    return torch.stack(codes, dim=1).reshape(-1, codes[0].shape[-1])  # interleave left/right codebooks


def prompt_codes(codec: Any, samples: np.ndarray, sample_rate: int, seconds: float,
                 audio_channels: int = 1) -> Any:
    """Codes of the last `seconds` of `samples`: the decoder prompt for the next segment.

    The tail is cut on a whole number of codec frames (ceil(seconds * frame_rate), at most what the
    audio holds) counted back from the end, so the prompt's last frame ends exactly where the audio
    does and the next segment's first frame follows it.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    data = np.asarray(samples)
    hop = int(math.prod(codec.config.upsampling_ratios)) * int(sample_rate) / int(codec.config.sampling_rate)
    frames = min(math.ceil(seconds * float(codec.config.frame_rate)), int(data.shape[0] // hop))
    if frames < 1:
        raise ValueError(f"need at least one codec frame ({hop:g} samples) of audio, got {data.shape[0]}")
    tail = data[data.shape[0] - round(frames * hop):]
    return encode_audio(codec, tail, sample_rate, audio_channels)
