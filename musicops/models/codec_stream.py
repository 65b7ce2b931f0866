"""Incremental EnCodec decoding: MusicGen codes in, audio chunks out while the codes are still coming.

Why not call `audio_encoder.decode` on each window of frames: EnCodec's decoder is a convolution,
then an LSTM over frames, then upsampling convolutions. The LSTM never forgets its start, so a
window decoded from a cold state differs from the full decode wherever the state had not settled
(on real weights that is far longer than any context a streamer can afford). This module runs the
decoder's own modules in three parts, so chunks match the whole-clip decode to float rounding:

1. codes -> embeddings (the quantizer; pointwise in time) -> first convolution, computed only for
   frames whose kernel sees real neighbours (`conv_lookahead` frames ahead), exact by construction;
2. the LSTM, fed those frames in order with its (h, c) state carried across chunks: exact;
3. the upsampling stack, a pure convolution stack with a short receptive field, run on overlapping
   windows of LSTM outputs: `left_context_frames` before and `lookahead_frames` after the frames a
   chunk emits, so the window edges (padded by the convolutions) never reach the emitted samples.

Successive windows overlap by `crossfade_samples`, which are cross-faded (raised-cosine gains summing
to 1: linear in amplitude, right for two decodes of the same signal, which are correlated). Exact
decoding makes the fade a guard rather than a repair: it keeps chunk boundaries smooth when the
codec runs at another precision or device.

Codes are (codebooks, frames) per clip after the delay pattern is undone, as `DecodeEngine.decode_codes`
returns them; stereo MusicGen interleaves the channels' codebooks, which are decoded separately
exactly as `DecodeEngine.decode_audio` does. Chunks are float32 (samples, channels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _ChannelState:
    """One channel's decoder state: embeddings not yet through the LSTM, LSTM outputs kept for windows."""

    embeddings: Any = None  # (1, hidden, frames) from `embedded_from` on
    embedded_from: int = 0  # global frame index of embeddings[..., 0]
    lstm_state: Any = None  # (h, c) of the LSTM after `lstm_frames` frames
    lstm_frames: int = 0  # frames that went through the LSTM
    lstm_out: Any = None  # (1, channels, frames) LSTM outputs from `lstm_from` on
    lstm_from: int = 0
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # next chunk's fade-out


class StreamingCodecDecoder:
    """Decode MusicGen codes frame by frame into audio chunks whose concatenation is the full decode.

    `push(codes)` takes newly generated frames (codebooks, n) and returns the chunks now complete
    (possibly none); `finish()` returns the rest. Every chunk but the last holds `chunk_frames`
    frames of audio. Time to first audio: `first_chunk_frames` frames must have arrived (chunk +
    look-ahead of the LSTM input convolution + look-ahead of the upsampling window); the generator
    needs `num_codebooks - 1` more decoder steps than frames because of the delay pattern.

    `total_samples` (e.g. round(duration * sample_rate)) trims or zero-pads the stream to that
    length, as `DecodeEngine.decode_audio` trims the full decode; None keeps frames * hop samples.
    """

    def __init__(self, codec: Any, *, audio_channels: int = 1, chunk_frames: int = 10,
                 left_context_frames: int = 3, lookahead_frames: int = 2, crossfade_samples: int = 128,
                 total_samples: int | None = None):
        decoder = codec.decoder
        layers = list(decoder.layers)
        names = [type(layer).__name__ for layer in layers[:2]]
        if names != ["EncodecConv1d", "EncodecLSTM"] or codec.config.norm_type != "weight_norm":
            # time_group_norm normalises over the whole clip: no chunk can know it
            raise ValueError(f"unsupported EnCodec decoder layout {names} / norm {codec.config.norm_type!r}")
        if chunk_frames < 1 or left_context_frames < 0 or lookahead_frames < 0 or crossfade_samples < 0:
            raise ValueError("chunk_frames must be >= 1; context, look-ahead and cross-fade >= 0")
        self.codec = codec
        self.audio_channels = int(audio_channels)
        self.hop = int(math.prod(codec.config.upsampling_ratios))  # samples per frame
        if crossfade_samples > lookahead_frames * self.hop:
            raise ValueError(f"crossfade_samples ({crossfade_samples}) must fit in the look-ahead "
                             f"({lookahead_frames} frames x {self.hop} samples)")
        self.chunk_frames = int(chunk_frames)
        self.left_context = int(left_context_frames)
        self.lookahead = int(lookahead_frames)
        self.crossfade = int(crossfade_samples)
        self.total_samples = total_samples
        first = layers[0]
        padding = int(first.padding_total)
        right = 0 if first.causal else padding // 2
        self.conv_left, self.conv_right = padding - right, right  # frames the first conv reads either side
        self.first_conv, self.lstm, self.upsample = layers[0], layers[1], layers[2:]
        # raised-cosine fade-in; the fade-out is 1 - fade-in (gains sum to 1 at every sample)
        ramp = np.arange(1, self.crossfade + 1, dtype=np.float64) / (self.crossfade + 1)
        self.fade_in = (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
        self.frames = 0  # frames received
        self.emitted_frames = 0  # frames whose audio has been emitted
        self.emitted_samples = 0
        self.finished = False
        self._channels = [_ChannelState() for _ in range(self.audio_channels)]

    # ---------------------------------------------------------------- latency
    @property
    def first_chunk_frames(self) -> int:
        """Frames that must have arrived before the first chunk comes out (time to first audio)."""
        return self.chunk_frames + self.lookahead + self.conv_right

    @property
    def latency_samples(self) -> int:
        """The first chunk's latency in audio samples: it ends this far before the newest frame's end."""
        return (self.lookahead + self.conv_right) * self.hop

    # ------------------------------------------------------------------- API
    def push(self, codes: Any) -> list[np.ndarray]:
        """Add frames (codebooks, n) of codes; returns the chunks that are now complete, in order."""
        import torch

        if self.finished:
            raise RuntimeError("push after finish")
        codes = torch.as_tensor(codes)
        if codes.ndim != 2:
            raise ValueError(f"codes must be (codebooks, frames), got shape {tuple(codes.shape)}")
        if codes.shape[1] == 0:
            return []
        with torch.inference_mode():
            for channel, state in enumerate(self._channels):
                books = codes[channel::self.audio_channels] if self.audio_channels > 1 else codes
                embedded = self.codec.quantizer.decode(books[:, None, :])  # (1, hidden, n)
                state.embeddings = (embedded if state.embeddings is None
                                    else torch.cat([state.embeddings, embedded], dim=-1))
            self.frames += int(codes.shape[1])
            chunks = []
            while self.frames >= self.emitted_frames + self.first_chunk_frames:
                chunks.append(self._emit(self.emitted_frames + self.chunk_frames, final=False))
        return [chunk for chunk in chunks if chunk.shape[0]]

    def finish(self) -> np.ndarray:
        """The last chunk: everything not yet emitted (trimmed/padded to `total_samples` if set)."""
        import torch

        if self.finished:
            raise RuntimeError("finish called twice")
        self.finished = True
        if self.frames <= self.emitted_frames:
            chunk = np.zeros((0, self.audio_channels), dtype=np.float32)
        else:
            with torch.inference_mode():
                chunk = self._emit(self.frames, final=True)
        if self.total_samples is not None and self.emitted_samples < self.total_samples:
            missing = self.total_samples - self.emitted_samples
            chunk = np.concatenate([chunk, np.zeros((missing, self.audio_channels), dtype=np.float32)])
            self.emitted_samples = self.total_samples
        return chunk

    # ------------------------------------------------------------- internals
    def _advance_lstm(self, state: _ChannelState, final: bool) -> None:
        """Run the first conv + LSTM over every frame whose conv output is now exact."""
        import torch

        ready = self.frames if final else self.frames - self.conv_right
        start = state.lstm_frames
        if ready <= start:
            return
        # the conv output at frame f reads frames f - conv_left .. f + conv_right: give it exactly those
        lo = max(0, start - self.conv_left)
        hi = self.frames if final else ready + self.conv_right
        window = state.embeddings[..., lo - state.embedded_from: hi - state.embedded_from]
        conv = self.first_conv(window)[..., start - lo: ready - lo]
        steps = conv.permute(2, 0, 1)  # (frames, batch, dim): EncodecLSTM's layout
        out, state.lstm_state = self.lstm.lstm(steps, state.lstm_state)
        out = (out + steps).permute(1, 2, 0)
        state.lstm_out = out if state.lstm_out is None else torch.cat([state.lstm_out, out], dim=-1)
        state.lstm_frames = ready
        # embeddings the conv will not read again
        keep = max(0, ready - self.conv_left) - state.embedded_from
        if keep > 0:
            state.embeddings = state.embeddings[..., keep:]
            state.embedded_from += keep

    def _emit(self, end: int, final: bool) -> np.ndarray:
        """Audio for frames [emitted_frames, end), its start cross-faded with the previous window's tail."""
        begin = self.emitted_frames
        start_sample = begin * self.hop
        stop_sample = end * self.hop
        if self.total_samples is not None:
            stop_sample = min(stop_sample, self.total_samples)
            start_sample = min(start_sample, stop_sample)
        parts = []
        for state in self._channels:
            self._advance_lstm(state, final)
            lo = max(0, begin - self.left_context)
            hi = self.frames if final else end + self.lookahead
            window = state.lstm_out[..., lo - state.lstm_from: hi - state.lstm_from]
            hidden = window
            for layer in self.upsample:
                hidden = layer(hidden)
            audio = hidden[0, 0].detach().float().cpu().numpy()  # (samples,) from frame lo
            offset = lo * self.hop
            body = audio[start_sample - offset: stop_sample - offset].copy()
            fade = min(state.tail.shape[0], body.shape[0])
            if fade:
                body[:fade] = body[:fade] * self.fade_in[:fade] + state.tail[:fade] * (1 - self.fade_in[:fade])
            tail_end = min(stop_sample + self.crossfade, audio.shape[0] + offset)
            state.tail = audio[stop_sample - offset: tail_end - offset].copy() if not final else state.tail[:0]
            parts.append(body)
            # LSTM outputs no later window reads
            drop = max(0, end - self.left_context) - state.lstm_from
            if drop > 0:
                state.lstm_out = state.lstm_out[..., drop:]
                state.lstm_from += drop
        self.emitted_frames = end
        self.emitted_samples = stop_sample
        return np.ascontiguousarray(np.stack(parts, axis=1), dtype=np.float32)


def decode_stream(codec: Any, codes: Any, frames_per_push: int = 1, **options: Any) -> list[np.ndarray]:
    """All chunks of one clip's codes fed `frames_per_push` frames at a time (what a generator does)."""
    stream = StreamingCodecDecoder(codec, **options)
    chunks: list[np.ndarray] = []
    for start in range(0, int(codes.shape[1]), frames_per_push):
        chunks.extend(stream.push(codes[:, start:start + frames_per_push]))
    last = stream.finish()
    if last.shape[0]:
        chunks.append(last)
    return chunks
