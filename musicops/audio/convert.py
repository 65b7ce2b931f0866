"""Sample-rate and channel conversion: the one place audio changes rate or becomes mono.

Post-processing, training data, the embedders and the copyright catalog all resample with scipy's
polyphase filter (Kaiser window, the ratio reduced by the gcd), so a clip converted anywhere in the
platform has the same samples; a second resampler would make fingerprints and embeddings disagree.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

RESAMPLER = "scipy.resample_poly"  # recorded in embedding provenance


def resample(samples: np.ndarray, from_rate: int, to_rate: int, *, axis: int = 0) -> np.ndarray:
    """Polyphase resampling along `axis` (time); the input itself when the rates match.

    Float32 stays float32 and float64 stays float64. Deterministic and alias-suppressing (the
    polyphase filter low-passes at the lower Nyquist).
    """
    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive: {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return np.asarray(samples)
    from scipy.signal import resample_poly

    g = math.gcd(from_rate, to_rate)
    return resample_poly(samples, to_rate // g, from_rate // g, axis=axis)


def to_mono(samples: np.ndarray, *, dtype: DTypeLike = np.float32) -> np.ndarray:
    """(frames,) from (frames,) or (frames, channels): the channel mean, computed in `dtype`."""
    data = np.asarray(samples, dtype=dtype)
    if data.ndim == 2:
        return data.mean(axis=1)
    if data.ndim != 1:
        raise ValueError(f"audio must be (frames,) or (frames, channels), got shape {np.shape(samples)}")
    return data
