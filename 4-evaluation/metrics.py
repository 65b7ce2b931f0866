"""Embedding metrics: Fréchet distance (FAD), CLAP score, paired bootstrap, embedding drift.

All statistics run in float64 on numpy arrays; embeddings come from `musicops.evaluation.embedders`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# A negative Fréchet distance smaller than this fraction of the problem's scale is rounding error.
_ROUNDING_TOLERANCE = 1e-6


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a (n, dim) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _stats(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if x.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 embeddings for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh; rounding-negative eigenvalues become 0."""
    values, vectors = np.linalg.eigh((s + s.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _trace_sqrt_psd(m: np.ndarray) -> float:
    """tr(sqrt(M)) for a symmetric PSD M: the sum of the square roots of its eigenvalues."""
    values = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def _finish(value: float, scale: float) -> float:
    """Clamp rounding-level negatives to 0; anything more negative is a bug, not a distance."""
    if value < 0:
        if value < -_ROUNDING_TOLERANCE * max(scale, 1e-12):
            raise FloatingPointError(f"Fréchet distance came out negative ({value:.3e}, scale {scale:.3e})")
        return 0.0
    return float(value)


def _frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, sqrt_s2: np.ndarray,
                        trace_s2: float) -> float:
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    cross = _trace_sqrt_psd(sqrt_s2 @ s1 @ sqrt_s2)
    trace_s1 = float(np.trace(s1))
    return _finish(mean_term + trace_s1 + trace_s2 - 2.0 * cross, mean_term + trace_s1 + trace_s2)


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (FAD when the sets are audio).

    Uses tr(sqrt(sqrt(S2) S1 sqrt(S2))) (same eigenvalues as S1 S2) computed with `eigh` of symmetric
    PSD matrices, so the result is real; `scipy.linalg.sqrtm(S1 @ S2)` can return complex values or a
    negative distance on near-identical or rank-deficient sets. `eps` is added to both covariance
    diagonals (it cancels exactly in FD(X, X)) to keep rank-deficient covariances (n < dim) well
    conditioned.
    """
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding dims differ: {x.shape[1]} != {y.shape[1]}")
    mu1, s1 = _stats(x, "a")
    mu2, s2 = _stats(y, "b")
    ridge = eps * np.eye(x.shape[1])
    s1, s2 = s1 + ridge, s2 + ridge
    return _frechet_from_stats(mu1, s1, mu2, _psd_sqrt(s2), float(np.trace(s2)))


def frechet_contributions(candidate: np.ndarray, reference: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-candidate-clip leave-one-out contribution FD(all) - FD(all but clip i), to find outliers.

    The reference's square root is computed once; each leave-one-out covariance is a rank-one
    downdate of the full one, so each clip costs one `eigvalsh`.
    """
    x, ref = _as_2d(candidate, "candidate"), _as_2d(reference, "reference")
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"embedding dims differ: {x.shape[1]} != {ref.shape[1]}")
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"candidate: need at least 3 embeddings for leave-one-out, got {n}")
    ridge = eps * np.eye(x.shape[1])
    mu_r, s_r = _stats(ref, "reference")
    s_r = s_r + ridge
    sqrt_r, trace_r = _psd_sqrt(s_r), float(np.trace(s_r))
    mu, s = _stats(x, "candidate")
    full = _frechet_from_stats(mu, s + ridge, mu_r, sqrt_r, trace_r)
    out = np.empty(n)
    for i in range(n):
        d = x[i] - mu
        mu_i = (n * mu - x[i]) / (n - 1)
        s_i = ((n - 1) * s - (n / (n - 1)) * np.outer(d, d)) / (n - 2)
        out[i] = full - _frechet_from_stats(mu_i, s_i + ridge, mu_r, sqrt_r, trace_r)
    return out


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot take the cosine of an all-zero embedding")
    return x / norms


def _paired(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_2d(a, names[0]), _as_2d(b, names[1])
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} must be paired row by row: {x.shape} != {y.shape}")
    return _normalise_rows(x), _normalise_rows(y)


def clap_score(audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of each audio embedding with its own prompt's text embedding."""
    audio, text = _paired(audio_emb, text_emb, ("audio_emb", "text_emb"))
    return np.einsum("nd,nd->n", audio, text)


def embedding_drift(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per-prompt cosine distance (1 - cos) between a candidate's and the baseline's paired clips."""
    cand, base = _paired(candidate, baseline, ("candidate", "baseline"))
    return 1.0 - np.einsum("nd,nd->n", cand, base)


@dataclass
class PairedComparison:
    """Candidate minus baseline over the same prompts and seeds, with a bootstrap CI."""

    mean_delta: float
    ci_low: float
    ci_high: float
    n: int
    p_better: float  # fraction of bootstrap means > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(candidate: np.ndarray, baseline: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     ci: float = 0.95) -> PairedComparison:
    """Bootstrap the mean per-prompt delta; pairing removes prompt difficulty from the variance."""
    cand = np.asarray(candidate, dtype=np.float64).ravel()
    base = np.asarray(baseline, dtype=np.float64).ravel()
    if cand.shape != base.shape:
        raise ValueError(f"candidate and baseline must be paired per prompt: {cand.shape} != {base.shape}")
    if cand.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    deltas = cand - base
    if not np.all(np.isfinite(deltas)):
        raise ValueError("scores contain NaN or inf")
    rng = np.random.default_rng(seed)
    rows = max(1, 4_000_000 // deltas.size)  # bound the index matrix to ~32 MB however many prompts
    means = np.concatenate([
        deltas[rng.integers(0, deltas.size, size=(min(rows, n_boot - start), deltas.size))].mean(axis=1)
        for start in range(0, n_boot, rows)
    ])
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedComparison(mean_delta=float(deltas.mean()), ci_low=float(low), ci_high=float(high),
                            n=int(deltas.size), p_better=float((means > 0).mean()))


def reference_set_hash(file_hashes: list[str]) -> str:
    """Order-independent sha256 of a reference set's file hashes (duplicates count: they change FAD)."""
    digest = hashlib.sha256()
    for item in sorted(h.strip().lower() for h in file_hashes):
        digest.update(item.encode() + b"\n")
    return digest.hexdigest()
