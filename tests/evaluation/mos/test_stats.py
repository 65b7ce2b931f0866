"""MOS statistics: t-interval by hand, Krippendorff's alpha against published values and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from musicops.evaluation.mos.stats import krippendorff_alpha, mean_ci

NAN = math.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units,
# with missing data. Published: nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]
# Same paper, section A: 2 observers x 10 units, binary; published nominal alpha 0.095.
KRIPPENDORFF_A = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]


def test_mean_ci_matches_hand_computation() -> None:
    values = [4.0, 5.0, 3.0, 4.0, 2.0]
    mean = sum(values) / 5  # 3.6
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)  # sqrt(5.2 / 4) = 1.1402
    half = scipy_stats.t.ppf(0.975, 4) * s / math.sqrt(5)  # 2.7764 * 1.1402 / 2.2361 = 1.4158
    got = mean_ci(values)
    assert got == pytest.approx((3.6, 3.6 - half, 3.6 + half))
    assert half == pytest.approx(1.4158, abs=1e-4)


def test_mean_ci_other_confidence_and_edge_cases() -> None:
    mean, low, high = mean_ci([1.0, 2.0, 3.0], confidence=0.9)
    assert (high - mean) == pytest.approx(scipy_stats.t.ppf(0.95, 2) * 1.0 / math.sqrt(3))
    one = mean_ci([3.0])
    assert one[0] == 3.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread, zero-width interval
    with pytest.raises(ValueError):
        mean_ci([1.0, NAN])
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], confidence=1.0)


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815),
                                                  ("interval", 0.849), ("ratio", 0.797)])
def test_alpha_reproduces_krippendorffs_worked_example(level: str, published: float) -> None:
    assert krippendorff_alpha(KRIPPENDORFF_C, level) == pytest.approx(published, abs=5e-4)


def test_alpha_binary_example() -> None:
    assert krippendorff_alpha(KRIPPENDORFF_A, "nominal") == pytest.approx(0.095, abs=5e-4)


def _brute_force_alpha(matrix: np.ndarray, level: str) -> float:
    """Straight from the definition over pairable values: 1 - D_o / D_e, no coincidence matrix."""
    delta2 = {"interval": lambda a, b: (a - b) ** 2, "nominal": lambda a, b: float(a != b),
              "ratio": lambda a, b: 0.0 if a + b == 0 else ((a - b) / (a + b)) ** 2}[level]
    units = [col[~np.isnan(col)] for col in matrix.T]
    units = [u for u in units if len(u) >= 2]
    values = np.concatenate(units)
    n = len(values)
    observed = sum(delta2(u[i], u[j]) / (len(u) - 1)
                   for u in units for i, j in itertools.permutations(range(len(u)), 2)) / n
    pairs = itertools.permutations(range(n), 2)
    expected = sum(delta2(values[i], values[j]) for i, j in pairs) / (n * (n - 1))
    return 1.0 - observed / expected


@pytest.mark.parametrize("level", ["interval", "nominal", "ratio"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_matches_brute_force_on_random_data(level: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, size=9)
    matrix = np.clip(truth[None, :] + rng.integers(-1, 2, size=(5, 9)), 1, 5).astype(float)
    matrix[rng.random(matrix.shape) < 0.3] = NAN
    assert krippendorff_alpha(matrix, level) == pytest.approx(_brute_force_alpha(matrix, level), abs=1e-12)


def test_alpha_edge_cases() -> None:
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]], "interval") == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([[3, 3], [3, 3]]))  # no variation: undefined
    assert math.isnan(krippendorff_alpha([[1, NAN], [NAN, 2]]))  # nothing pairable
    with pytest.raises(ValueError):
        krippendorff_alpha([[1, 2]], "cardinal")
