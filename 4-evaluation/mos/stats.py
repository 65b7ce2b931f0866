"""Statistics for listening tests: mean opinion score with a t confidence interval, Krippendorff's alpha.

Why a t-interval over the individual ratings: it is what ITU-T P.1401 and ITU-R BS.1534 report (mean
± t(0.975, n-1) * s / sqrt(n)), it is honest for the small n of a listening test (a normal quantile
would be too narrow below ~30 ratings), and it needs no model of rater effects. Ratings of one clip
by different raters are independent draws; pooled per-model intervals ignore that ratings cluster
by clip and rater, so they are a lower bound on the true uncertainty (documented in `results`).

Krippendorff's alpha uses the coincidence-matrix formulation of Krippendorff (2011, "Computing
Krippendorff's Alpha-Reliability"): any number of raters, missing ratings allowed, nominal,
ordinal, interval or ratio metric. Units with fewer than two ratings are not pairable and drop out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

LEVELS = ("nominal", "ordinal", "interval", "ratio")


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a two-sided t confidence interval; one value gives (v, nan, nan), none all nan."""
    from scipy import stats

    data = np.asarray(list(values), dtype=float)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if data.size and not np.isfinite(data).all():
        raise ValueError("mean_ci got NaN or infinite values")
    n = int(data.size)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if n == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * float(data.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def _delta2(values: np.ndarray, counts: np.ndarray, level: str) -> np.ndarray:
    """Squared difference function delta^2(c, k) for every pair of distinct values."""
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        total = c + k
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(total == 0, 0.0, ((c - k) / np.where(total == 0, 1.0, total)) ** 2)
        return out
    # ordinal: (sum of n_g for g from c to k, minus half of n_c and n_k)^2, values sorted ascending
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    between = cumulative[hi + 1] - cumulative[lo]
    return (between - (counts[i] + counts[j]) / 2.0) ** 2


def krippendorff_alpha(matrix: Sequence[Sequence[float]] | np.ndarray, level: str = "interval") -> float:
    """Krippendorff's alpha for a raters x units matrix with NaN for missing ratings.

    Returns nan when it is undefined: no unit has two ratings, or every pairable rating is the same
    value (no expected disagreement).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    data = np.asarray(matrix, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D raters x units matrix, got shape {data.shape}")
    present = ~np.isnan(data)
    pairable = present.sum(axis=0) >= 2
    if not pairable.any():
        return math.nan
    data, present = data[:, pairable], present[:, pairable]
    values = np.unique(data[present])
    if values.size < 2:
        return math.nan
    index = {v: i for i, v in enumerate(values)}
    # Coincidence matrix: each unit with m ratings contributes every ordered pair of its ratings
    # (from different raters) with weight 1 / (m - 1).
    coincidences = np.zeros((values.size, values.size))
    for u in range(data.shape[1]):
        unit = data[present[:, u], u]
        m = unit.size
        per_value = np.zeros(values.size)
        for v in unit:
            per_value[index[v]] += 1
        pairs = np.outer(per_value, per_value) - np.diag(per_value)  # ordered pairs, no self-pairs
        coincidences += pairs / (m - 1)
    counts = coincidences.sum(axis=1)
    n = counts.sum()
    delta2 = _delta2(values, counts, level)
    observed = (coincidences * delta2).sum() / n
    expected = (np.outer(counts, counts) * delta2).sum() / (n * (n - 1))
    if expected == 0:
        return math.nan
    return float(1.0 - observed / expected)
