"""Loudness and level measurements (ITU-R BS.1770 via pyloudnorm)."""

from __future__ import annotations

import math

import numpy as np


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS; -inf for silence or clips shorter than one 400 ms gating block."""
    import pyloudnorm

    data = np.asarray(samples, dtype=np.float64)
    if data.shape[0] < int(0.4 * sample_rate) + 1:
        return -math.inf
    meter = pyloudnorm.Meter(sample_rate)
    with np.errstate(divide="ignore"):
        value = float(meter.integrated_loudness(data))
    return value


def peak_dbfs(samples: np.ndarray) -> float:
    peak = float(np.max(np.abs(samples))) if np.size(samples) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf
