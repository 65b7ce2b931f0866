"""The look-ahead true-peak limiter: a ceiling no clip's true peak (4x oversampled) crosses.

Its own module because two callers need it: `limit` on its own, and the post-processing chain,
which drives `GainControl` with a static gain and iterates it against the loudness target. The
envelope is computed at a 0.5 ms control rate and interpolated, so limiting stays vectorised.
"""

from __future__ import annotations

import math

import numpy as np

from musicops.audio.measure import amplitude_db, channels_first, frame_peaks

# The limiter aims this far below the ceiling so the gain interpolation between control points and
# float32 rounding can never push the measured true peak over it.
LIMITER_MARGIN_DB = 0.1
# The final safety trim (only used if the limiter's estimate was still beaten) lands this far below.
SAFETY_MARGIN_DB = 0.05
CONTROL_PERIOD_S = 0.0005  # limiter gain control rate (2 kHz); far above any audible gain change


def limit(samples: np.ndarray, sample_rate: int, ceiling_dbtp: float, lookahead_ms: float = 5.0,
          release_ms: float = 60.0) -> tuple[np.ndarray, float]:
    """Look-ahead true-peak limiter; returns (float32 (frames, channels), max gain reduction in dB).

    Channels are linked (one gain for all) so the stereo image does not shift while limiting.
    """
    x = channels_first(samples)
    control = GainControl(frame_peaks(x), int(sample_rate), lookahead_ms, release_ms)
    points, reduction = control.points(0.0, ceiling_dbtp - LIMITER_MARGIN_DB)
    y = control.apply(x, points)
    peak = amplitude_db(float(frame_peaks(y).max()))
    if peak > ceiling_dbtp - SAFETY_MARGIN_DB / 2:  # never expected; keeps the guarantee unconditional
        y *= 10.0 ** ((ceiling_dbtp - SAFETY_MARGIN_DB - peak) / 20.0)
    return np.ascontiguousarray(y.T, dtype=np.float32), float(reduction)


class GainControl:
    """Static gain plus look-ahead limiter, as gains at control points every ~0.5 ms.

    Per control block the required reduction is max(0, peak_dB + gain_dB - ceiling_dB), from the
    frames' oversampled peaks. Control points sit on block edges and take the larger of the two
    blocks they border, so linear gain interpolation between points never exceeds what either block
    allows. Then, in dB: exponential release (peak hold with exponential decay, as a running max in
    the log domain), a hold over the look-ahead window, and a moving average over the same window:
    every onset becomes a smooth ramp that starts `lookahead_ms` early and still reaches the full
    reduction at the peak (each averaged value is held >= the required one).
    """

    def __init__(self, frame_peak: np.ndarray, rate: int, lookahead_ms: float = 5.0,
                 release_ms: float = 60.0):
        self.frames = frame_peak.shape[0]
        self.block = max(1, round(rate * CONTROL_PERIOD_S))
        blocks = -(-self.frames // self.block)
        padded = np.zeros(blocks * self.block)
        padded[: self.frames] = frame_peak
        with np.errstate(divide="ignore"):
            self.block_peak_db = 20.0 * np.log10(padded.reshape(blocks, self.block).max(axis=1))
        self.lookahead = max(1, math.ceil(lookahead_ms * rate / 1000.0 / self.block))
        self.release_log = -self.block / max(release_ms * rate / 1000.0, 1e-9)  # ln(decay) per block

    def points(self, gain_db: float, ceiling_db: float | None) -> tuple[np.ndarray, float]:
        """Linear gain at each control point (blocks + 1 of them) and the largest reduction in dB."""
        from scipy.ndimage import maximum_filter1d

        gain = 10.0 ** (gain_db / 20.0)
        count = self.block_peak_db.shape[0] + 1
        need = self.block_peak_db + (gain_db - (ceiling_db if ceiling_db is not None else math.inf))
        if not (need > 0).any():
            return np.full(count, gain), 0.0
        need = np.maximum(need, 0.0)
        zero = np.zeros(1)
        required = np.maximum(np.concatenate([zero, need]), np.concatenate([need, zero]))
        # release: R[b] = max_k<=b required[k] * exp(release_log * (b - k)), via a log-domain running max
        index = np.arange(count) * self.release_log
        with np.errstate(divide="ignore"):
            released = np.exp(index + np.maximum.accumulate(np.log(required) - index))
        size = self.lookahead + 1
        # hold: max over [b, b + lookahead]; then mean over [b - lookahead, b] (edge value before 0)
        held = maximum_filter1d(released, size=size, origin=-(size // 2), mode="constant", cval=0.0)
        running = np.concatenate([np.zeros(1), np.cumsum(np.concatenate([np.full(size - 1, held[0]), held]))])
        ramp = (running[size:] - running[:-size]) / size
        return gain * 10.0 ** (-ramp / 20.0), float(ramp.max())

    def apply(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        """x times the control-point gains interpolated linearly to every frame (a new array)."""
        if (points == points[0]).all():  # no limiting: one static gain
            return x * points[0]
        fraction = np.arange(self.block) / self.block
        gain = np.empty((points.shape[0] - 1, self.block))
        np.multiply((points[1:] - points[:-1])[:, None], fraction, out=gain)
        gain += points[:-1, None]
        return x * gain.ravel()[: self.frames]
