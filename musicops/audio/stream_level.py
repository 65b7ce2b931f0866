"""Streaming loudness leveller + look-ahead true-peak limiter: the post-processing chain for chunks.

`postprocess` finishes a whole clip: it measures integrated loudness, searches one static gain and
limits with the whole envelope known. A stream has neither the whole clip nor the time to search,
so `StreamLeveler` levels as the audio comes:

1. Leveller: BS.1770 K-weighting (the filters `musicops.audio.measure` meters with) run with their
   state carried across chunks; loudness over a sliding window (3 s: EBU R128 short-term; 0.4 s
   gives momentary); the gain moves toward `target_lufs - loudness` by at most `max_slew_db_per_s`
   (no pumping), clamped to `gain_range_db`, and holds while the input is below `gate_lufs` (so
   silence is not boosted). Gain is ramped linearly sample by sample within each step.
2. Limiter: the scheme of `musicops.audio.limiter.GainControl` in streaming form: 4x oversampled
   peaks (`measure.frame_peaks`), reduction needed per 0.5 ms control block, exponential release,
   hold over the look-ahead, moving average over the look-ahead; the averaged reduction is never
   below what any sample needs, so the true peak stays under the ceiling (minus the same margin).

Why hand-written: the whole-clip limiter and gain search need the whole clip (scipy filters over
the full envelope, iterated gain). Here every step runs on fixed units of audio (`unit` samples),
whatever size the chunks arrive in, so processing chunk by chunk gives exactly the output of
processing their concatenation (same operations on the same data: bit-identical, tested). The cost
is latency: output trails input by `latency_samples` (the look-ahead, the interpolator's reach and
the unit buffering); `flush()` returns the remainder, so the output has exactly the input's length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from musicops.audio.limiter import CONTROL_PERIOD_S, LIMITER_MARGIN_DB
from musicops.audio.measure import channels_first, frame_peaks, k_weighting
from musicops.audio.postprocess import DC_HIGHPASS_HZ, dc_highpass

_UNIT_BLOCKS = 32  # control blocks per processing unit (512 samples, 16 ms at 32 kHz)


class StreamLeveler:
    """Chunk in, levelled and limited chunk out (float32 (frames, channels)), state carried between chunks."""

    def __init__(self, sample_rate: int, channels: int = 1, *, target_lufs: float = -14.0,
                 ceiling_dbtp: float = -1.0, window_s: float = 3.0, max_slew_db_per_s: float = 6.0,
                 gain_range_db: tuple[float, float] = (-24.0, 24.0), gate_lufs: float = -50.0,
                 initial_gain_db: float | None = None, lookahead_ms: float = 5.0, release_ms: float = 60.0,
                 dc_removal: bool = True):
        """`initial_gain_db` None: the first unit's measured gain is used as is (nothing was played yet)."""
        if ceiling_dbtp > 0:
            raise ValueError(f"ceiling_dbtp must be <= 0 dBTP, got {ceiling_dbtp}")
        if window_s <= 0 or max_slew_db_per_s < 0 or gain_range_db[0] > gain_range_db[1]:
            raise ValueError("window_s must be > 0, max_slew_db_per_s >= 0, gain_range_db (low, high)")
        self.rate = int(sample_rate)
        self.channels = int(channels)
        self.target_lufs = float(target_lufs)
        self.ceiling_dbtp = float(ceiling_dbtp)
        self.gate_lufs = float(gate_lufs)
        self.gain_range_db = (float(gain_range_db[0]), float(gain_range_db[1]))
        self.block = max(1, round(self.rate * CONTROL_PERIOD_S))  # limiter control block
        self.unit = self.block * _UNIT_BLOCKS
        self.reach = self.block  # interpolator reach (10 samples at 4x), rounded up to a block
        self.lookahead = max(1, math.ceil(lookahead_ms * self.rate / 1000.0 / self.block))  # blocks
        self.decay = math.exp(-self.block / max(release_ms * self.rate / 1000.0, 1e-9))
        self.slew_db = max_slew_db_per_s * self.unit / self.rate  # per unit
        self.window_units = max(1, round(window_s * self.rate / self.unit))
        self._weights = np.array([1.41 if c in (3, 4) else 1.0 for c in range(self.channels)])  # BS.1770
        # DC removal: postprocess's 10 Hz high-pass, its state carried across units and started in
        # steady state for the first unit's mean (no offset step for the causal filter to ring on)
        self._dc_sos = dc_highpass(self.rate) if dc_removal and self.rate / 2 > DC_HIGHPASS_HZ else None
        self._dc_state: np.ndarray | None = None
        # leveller state
        sos = k_weighting(self.rate)
        self._sos = sos
        self._k_state = np.zeros((sos.shape[0], self.channels, 2))
        self._energies = np.zeros((self.window_units, self.channels))  # ring of per-unit K-weighted energy
        self._units = 0
        self._gain_db = initial_gain_db
        self._pending = np.zeros((self.channels, 0))
        self.received = 0
        # limiter state
        self._history = np.zeros((self.channels, 2 * self.reach))  # levelled samples before this unit
        self._delayed = np.zeros((self.channels, 0))  # levelled samples not yet output
        self._last_need = 0.0  # reduction need (dB) of the block before the next control point
        self._released = 0.0  # released reduction at the last control point
        self._released_pending = np.zeros(0)  # released values not yet held (points from _hold_next on)
        self._held_history: np.ndarray | None = None  # the last `lookahead` held values (moving average)
        self._last_gain: float | None = None  # limiter gain at the last control point
        self.emitted = 0
        self.loudness_lufs = -math.inf  # latest short-term loudness of the input
        self.max_reduction_db = 0.0  # largest limiter reduction so far

    # ---------------------------------------------------------------- latency
    @property
    def latency_samples(self) -> int:
        """Worst-case delay from a sample going in to it coming out: unit buffering + reach + look-ahead."""
        return self.unit - 1 + self.reach + (self.lookahead + 1) * self.block

    @property
    def gain_db(self) -> float:
        """The leveller's current gain (0 before any audio)."""
        return 0.0 if self._gain_db is None else self._gain_db

    # ------------------------------------------------------------------- API
    def process(self, samples: np.ndarray) -> np.ndarray:
        """Level and limit a chunk ((frames,) or (frames, channels)); returns what is ready (may be empty)."""
        data = np.asarray(samples)
        if data.size == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        x = channels_first(data)
        if x.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[0]}")
        self.received += x.shape[1]
        self._pending = np.concatenate([self._pending, x], axis=1)
        out: list[np.ndarray] = []
        while self._pending.shape[1] >= self.unit:
            out.append(self._run_unit(self._pending[:, : self.unit]))
            self._pending = self._pending[:, self.unit:]
        return self._output(out)

    def flush(self) -> np.ndarray:
        """The rest of the stream (zeros run through the look-ahead); total output length = total input."""
        out: list[np.ndarray] = []
        while self.emitted + sum(part.shape[1] for part in out) < self.received:
            unit = np.zeros((self.channels, self.unit))
            unit[:, : self._pending.shape[1]] = self._pending
            self._pending = np.zeros((self.channels, 0))
            out.append(self._run_unit(unit))
        return self._output(out)

    def _output(self, parts: list[np.ndarray]) -> np.ndarray:
        y = np.concatenate(parts, axis=1) if parts else np.zeros((self.channels, 0))
        y = y[:, : max(0, self.received - self.emitted)]
        self.emitted += y.shape[1]
        return np.ascontiguousarray(y.T, dtype=np.float32)

    # ------------------------------------------------------------- leveller
    def _level(self, x: np.ndarray) -> np.ndarray:
        """Apply the leveller's gain ramp to one unit and move its state on."""
        from scipy.signal import sosfilt

        weighted, self._k_state = sosfilt(self._sos, x, axis=1, zi=self._k_state)
        self._energies[self._units % self.window_units] = np.square(weighted).sum(axis=1)
        self._units += 1
        filled = min(self._units, self.window_units)
        mean_square = self._energies[:filled].sum(axis=0) / (filled * self.unit)
        with np.errstate(divide="ignore"):
            loudness = float(-0.691 + 10.0 * np.log10(self._weights @ mean_square))
        self.loudness_lufs = loudness
        previous = self._gain_db
        if loudness > self.gate_lufs:
            wanted = float(np.clip(self.target_lufs - loudness, *self.gain_range_db))
        else:  # too quiet to judge: hold
            wanted = 0.0 if previous is None else previous
        if previous is None:
            previous = wanted
        gain_db = previous + float(np.clip(wanted - previous, -self.slew_db, self.slew_db))
        self._gain_db = gain_db
        start, stop = 10.0 ** (previous / 20.0), 10.0 ** (gain_db / 20.0)
        ramp = start + (stop - start) * (np.arange(1, self.unit + 1) / self.unit)
        return x * ramp

    # -------------------------------------------------------------- limiter
    def _remove_dc(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import sosfilt, sosfilt_zi

        if self._dc_sos is None:
            return x
        if self._dc_state is None:
            self._dc_state = sosfilt_zi(self._dc_sos)[:, None, :] * x.mean(axis=1)[None, :, None]
        y, self._dc_state = sosfilt(self._dc_sos, x, axis=1, zi=self._dc_state)
        return y

    def _run_unit(self, x: np.ndarray) -> np.ndarray:
        """Remove DC, level one unit, then limit what the look-ahead now allows; returns (channels, n)."""
        y = self._level(self._remove_dc(x))
        # peaks of the frames whose interpolation support is complete: this unit shifted back by `reach`
        window = np.concatenate([self._history, y], axis=1)
        peaks = frame_peaks(window)[self.reach: self.reach + self.unit]
        self._history = window[:, -2 * self.reach:]
        if self._units == 1:  # the first unit: its first `reach` frames are before the start
            peaks = peaks[self.reach:]
        with np.errstate(divide="ignore"):
            block_db = 20.0 * np.log10(peaks.reshape(-1, self.block).max(axis=1))
        need = np.maximum(block_db - (self.ceiling_dbtp - LIMITER_MARGIN_DB), 0.0)
        # control point c borders blocks c-1 and c: it needs the larger reduction of the two
        points = np.maximum(np.concatenate([[self._last_need], need[:-1]]), need)
        self._last_need = float(need[-1])
        released = np.empty_like(points)
        level = self._released
        for index, value in enumerate(points):  # 32 points per unit: exponential release
            level = max(float(value), level * self.decay)
            released[index] = level
        self._released = level
        pending = np.concatenate([self._released_pending, released])
        size = self.lookahead + 1
        count = pending.shape[0] - self.lookahead  # points whose hold window is complete
        from numpy.lib.stride_tricks import sliding_window_view

        held = sliding_window_view(pending, size).max(axis=1)[:count] if count > 0 else np.zeros(0)
        self._released_pending = pending[count:] if count > 0 else pending
        if held.shape[0] == 0:
            self._delayed = np.concatenate([self._delayed, y], axis=1)
            return np.zeros((self.channels, 0))
        if self._held_history is None:  # before the stream's start: the first held value (as GainControl)
            self._held_history = np.full(self.lookahead, held[0])
        series = np.concatenate([self._held_history, held])
        reduction = sliding_window_view(series, size).mean(axis=1)
        self._held_history = series[-self.lookahead:]
        self.max_reduction_db = max(self.max_reduction_db, float(reduction.max()))
        gains = 10.0 ** (-reduction / 20.0)
        if self._last_gain is not None:
            gains = np.concatenate([[self._last_gain], gains])
        self._last_gain = float(gains[-1])
        blocks = gains.shape[0] - 1  # each needs its two points
        fraction = np.arange(self.block) / self.block
        ramp = (gains[:-1, None] + (gains[1:] - gains[:-1])[:, None] * fraction).ravel()
        self._delayed = np.concatenate([self._delayed, y], axis=1)
        out = self._delayed[:, : blocks * self.block] * ramp
        self._delayed = self._delayed[:, blocks * self.block:]
        return out


def level_stream(chunks: list[np.ndarray], sample_rate: int, channels: int = 1, **options: Any) -> np.ndarray:
    """Run chunks through one `StreamLeveler` and return the whole output (float32 (frames, channels))."""
    leveler = StreamLeveler(sample_rate, channels, **options)
    parts = [leveler.process(chunk) for chunk in chunks]
    parts.append(leveler.flush())
    return np.concatenate(parts)
