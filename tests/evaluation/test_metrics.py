"""Metrics against closed forms and known answers; provenance refuses incomparable scores."""

from __future__ import annotations

import numpy as np
import pytest

from musicops.evaluation.metrics import (
    PairedComparison,
    clap_score,
    embedding_drift,
    frechet_contributions,
    frechet_distance,
    paired_bootstrap,
    reference_set_hash,
)
from musicops.evaluation.provenance import (
    MetricProvenance,
    ProvenanceMismatchError,
    Score,
    compare_scores,
    ensure_comparable,
)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(s)
    return (vectors * np.sqrt(values)) @ vectors.T


def _closed_form(m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray) -> float:
    r1 = _sqrt_psd(s1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * _sqrt_psd(r1 @ s2 @ r1)))


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_matches_closed_form_on_gaussian_samples():
    rng = np.random.default_rng(0)
    d, n = 8, 20_000
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    m1, m2 = np.zeros(d), 0.3 * rng.standard_normal(d)
    x = rng.multivariate_normal(m1, s1, n)
    y = rng.multivariate_normal(m2, s2, n)
    z = rng.multivariate_normal(m1, s2, n)
    assert frechet_distance(x, y) == pytest.approx(_closed_form(m1, s1, m2, s2), rel=0.03)
    # covariance term alone (equal means): the part a sqrtm bug would break
    assert frechet_distance(x, z) == pytest.approx(_closed_form(m1, s1, m1, s2), rel=0.05)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)


def test_frechet_of_a_set_with_itself_is_zero_and_never_negative_or_complex():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 16))
    assert 0.0 <= frechet_distance(x, x) < 1e-9
    near = frechet_distance(x, x + 1e-9 * rng.standard_normal(x.shape))
    assert isinstance(near, float) and 0.0 <= near < 1e-9


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_frechet_rank_deficient_near_identical_sets_stay_real_and_non_negative(eps):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 64))  # n < d: singular covariances
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for other in (x, x + 1e-9 * rng.standard_normal(x.shape)):
        value = frechet_distance(x, other, eps=eps)
        assert isinstance(value, float) and np.isfinite(value)
        assert 0.0 <= value < 1e-6
    assert frechet_distance(x, rng.standard_normal((12, 64)), eps=eps) > 0.5


def test_frechet_rejects_bad_input():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="dims differ"):
        frechet_distance(rng.standard_normal((5, 3)), rng.standard_normal((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(rng.standard_normal((1, 3)), rng.standard_normal((5, 3)))
    bad = rng.standard_normal((5, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(bad, rng.standard_normal((5, 3)))


def test_contributions_match_leave_one_out_and_find_the_outlier():
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((60, 6))
    candidate = rng.standard_normal((25, 6))
    candidate[7] += 8.0
    contributions = frechet_contributions(candidate, reference)
    brute = np.array([frechet_distance(candidate, reference) - frechet_distance(np.delete(candidate, i, 0), reference)
                      for i in range(len(candidate))])
    np.testing.assert_allclose(contributions, brute, atol=1e-9)
    assert int(np.argmax(contributions)) == 7


def test_clap_score_and_drift_are_paired_cosines():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(clap_score(a, b), [1.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(embedding_drift(a, b), [0.0, 1.0, 2.0], atol=1e-12)
    with pytest.raises(ValueError, match="paired"):
        clap_score(a, b[:2])


def test_paired_bootstrap_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(5)
    baseline = rng.normal(0.3, 0.1, 64)
    better = paired_bootstrap(baseline + 0.5, baseline)
    assert isinstance(better, PairedComparison)
    assert better.ci_low > 0 and better.mean_delta == pytest.approx(0.5)
    assert better.p_better == 1.0 and better.n == 64
    same = paired_bootstrap(baseline, baseline)
    assert same.ci_low <= 0 <= same.ci_high and same.mean_delta == 0
    noisy = baseline + rng.normal(0, 0.05, 64)
    assert paired_bootstrap(noisy, baseline, seed=3) == paired_bootstrap(noisy, baseline, seed=3)
    assert paired_bootstrap(noisy, baseline, seed=3).to_dict() != paired_bootstrap(noisy, baseline, seed=4).to_dict()
    assert set(better.to_dict()) == {"mean_delta", "ci_low", "ci_high", "n", "p_better"}
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(baseline, baseline[:-1])


def test_reference_set_hash_is_order_independent_and_content_sensitive():
    hashes = ["aa" * 32, "bb" * 32, "cc" * 32]
    assert reference_set_hash(hashes) == reference_set_hash(list(reversed(hashes)))
    assert reference_set_hash(hashes) != reference_set_hash(hashes[:2])
    assert len(reference_set_hash(hashes)) == 64


def _provenance(**changes: object) -> MetricProvenance:
    base = dict(embedder="clap-tiny", weights_sha256="ab" * 32, sample_rate=48_000, resampler="scipy.resample_poly",
                window_s=2.0, hop_s=1.0, loudness_normalisation="none")
    base.update(changes)
    return MetricProvenance(**base)


def test_provenance_round_trip_and_strict_from_dict():
    prov = _provenance(reference_set_sha256="cd" * 32)
    assert MetricProvenance.from_dict(prov.to_dict()) == prov
    with pytest.raises(ValueError, match="unknown"):
        MetricProvenance.from_dict({**prov.to_dict(), "new_field": 1})
    with pytest.raises(ValueError, match="missing"):
        MetricProvenance.from_dict({k: v for k, v in prov.to_dict().items() if k != "hop_s"})
    score = Score("fad", 1.5, prov, extra={"n": 3})
    assert Score.from_dict(score.to_dict()) == score


def test_ensure_comparable_names_every_differing_field():
    ensure_comparable(_provenance(), _provenance())
    with pytest.raises(ProvenanceMismatchError) as info:
        ensure_comparable(_provenance(), _provenance(sample_rate=44_100, loudness_normalisation="-23 LUFS pyloudnorm"))
    message = str(info.value)
    assert "sample_rate: 48000 != 44100" in message
    assert "loudness_normalisation: 'none' != '-23 LUFS pyloudnorm'" in message
    assert "embedder" not in message
    assert isinstance(info.value, ValueError)


def test_compare_scores_is_b_minus_a_only_when_comparable():
    a = Score("fad", 2.0, _provenance())
    assert compare_scores(a, Score("fad", 1.25, _provenance())) == pytest.approx(-0.75)
    with pytest.raises(ProvenanceMismatchError, match="window_s"):
        compare_scores(a, Score("fad", 1.0, _provenance(window_s=10.0)))
    with pytest.raises(ProvenanceMismatchError, match="metric"):
        compare_scores(a, Score("clap", 1.0, _provenance()))
