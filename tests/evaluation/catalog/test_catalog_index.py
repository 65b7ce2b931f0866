"""The FAISS index: exact while small, IVF past the threshold, ids kept, same answers after save/load."""

from __future__ import annotations

import numpy as np
import pytest

from musicops.evaluation.catalog.index import VectorIndex, gpu_available

DIM = 24


def _clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, centres.shape[0], n)] + 0.35 * rng.standard_normal((n, centres.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, DIM))
    vectors = _clustered(4000, rng, centres)
    ids = rng.permutation(np.arange(10_000, 10_000 + 4000 * 3, 3))  # sparse, shuffled ids
    queries = _clustered(300, rng, centres)
    return vectors, ids.astype(np.int64), queries


def _exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def test_flat_below_threshold_is_exact(data) -> None:
    vectors, ids, queries = data
    index = VectorIndex(DIM, ivf_threshold=10_000)
    index.add(vectors, ids)
    assert index.kind == "flat" and index.ntotal == 4000 and not index.on_gpu
    scores, found = index.search(queries, 10)
    truth = _exact(vectors, ids, queries, 10)
    assert _recall(found, truth) == 1.0
    expected = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores, expected, atol=1e-5)  # cosine, best first


def test_crossing_the_threshold_rebuilds_as_ivf_with_good_recall(data, tmp_path) -> None:
    vectors, ids, queries = data
    index = VectorIndex(DIM, ivf_threshold=2500, nprobe=8)
    index.add(vectors[:2000], ids[:2000])
    assert index.kind == "flat"
    index.add(vectors[2000:], ids[2000:])  # 4000 > 2500: rebuilt as IVF over everything
    assert index.kind == "ivf" and index.ntotal == 4000
    nlist = index._ivf().nlist
    assert 40 <= nlist <= 80  # ~ sqrt(4000)
    truth = _exact(vectors, ids, queries, 10)
    scores, found = index.search(queries, 10)
    assert set(np.unique(found)) <= set(ids.tolist())
    assert _recall(found, truth) >= 0.9
    index.nprobe = nlist  # probing every list is exhaustive: exact again
    assert _recall(index.search(queries, 10)[1], truth) == 1.0

    path = tmp_path / "vectors.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, nprobe=8)
    assert loaded.kind == "ivf" and loaded.ntotal == 4000
    index.nprobe = 8
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])


def test_ids_validation_and_small_searches() -> None:
    index = VectorIndex(4)
    assert index.search(np.ones((2, 4), np.float32), 3)[1].tolist() == [[-1, -1, -1]] * 2
    index.add(np.eye(4, dtype=np.float32)[:2] * 5.0, [7, 9])  # not normalised: normalised on the way in
    scores, ids = index.search(np.array([[0, 1, 0, 0]], np.float32), 5)
    assert ids[0, :2].tolist() == [9, 7] and ids[0, 2:].tolist() == [-1, -1, -1]
    assert scores[0, 0] == pytest.approx(1.0) and np.isinf(scores[0, 2])
    with pytest.raises(ValueError, match="unique"):
        index.add(np.ones((2, 4)), [1, 1])
    with pytest.raises(ValueError, match="shape"):
        index.add(np.ones((1, 5)), [3])
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 4), np.nan), 1)


def test_cpu_build_reports_no_gpu_and_still_searches() -> None:
    """faiss-cpu has no StandardGpuResources: detection says no, and use_gpu=None quietly stays on CPU."""
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU build with a GPU: covered by the GPU check")
    assert gpu_available() is False
    index = VectorIndex(4, use_gpu=None)
    index.add(np.eye(4, dtype=np.float32), [0, 1, 2, 3])
    assert index.search(np.eye(4, dtype=np.float32), 1)[1].ravel().tolist() == [0, 1, 2, 3]
    assert not index.on_gpu
