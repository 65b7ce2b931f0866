"""A FAISS cosine index with an id map that picks its own structure by size.

Exact search (`IndexFlatIP` in `IndexIDMap2`) while the catalog is small, because it is exact and
needs no training; above `ivf_threshold` vectors an `IndexIVFFlat` (nlist ~ sqrt(n), trained on
the catalog's own vectors) keeps search sub-linear. The index is rebuilt from its stored vectors
when it crosses the threshold. faiss-gpu does not fall back to the CPU by itself, so GPU search is
opt-in by detection (GPUs present *and* a build with `StandardGpuResources`) and any failure
there keeps the CPU index.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

IVF_THRESHOLD = 50_000
DEFAULT_NPROBE = 16


class VectorIndex:
    """Inner-product search over L2-normalised float32 vectors (= cosine), with int64 ids."""

    def __init__(self, dim: int, *, ivf_threshold: int = IVF_THRESHOLD, nprobe: int = DEFAULT_NPROBE,
                 use_gpu: bool | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.ivf_threshold = int(ivf_threshold)
        self.nprobe = int(nprobe)
        self.use_gpu = use_gpu  # None = use one when available
        self._index = self._flat()
        self._gpu_index: Any = None  # a faiss GPU index (faiss ships no usable type for it)
        self._gpu_failed = False

    # --- structure ---------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """'flat' or 'ivf' (what the CPU index is)."""
        return "ivf" if self._ivf() is not None else "flat"

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def on_gpu(self) -> bool:
        return self._gpu_index is not None

    def _flat(self):
        import faiss

        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _ivf(self):
        import faiss

        inner = faiss.downcast_index(self._index.index)
        return inner if isinstance(inner, faiss.IndexIVF) else None

    def _vectors_and_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything stored, reconstructed (flat and IVF-flat store vectors exactly)."""
        import faiss

        n = self.ntotal
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexIVF):
            inner.make_direct_map()
        vectors = inner.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)
        return np.asarray(vectors, np.float32), ids

    def _rebuild_ivf(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        import faiss

        n = vectors.shape[0]
        nlist = max(1, min(int(round(math.sqrt(n))), n // 39))  # faiss wants ~39 points per centroid
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = 1234  # reproducible k-means
        ivf.train(vectors)
        ivf.nprobe = self.nprobe
        index = faiss.IndexIDMap2(ivf)  # faiss's wrappers keep `ivf` and `quantizer` referenced
        index.add_with_ids(vectors, ids)
        self._index = index

    # --- data --------------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors (n, dim) with unique int64 ids; switches to IVF once past the threshold."""
        x = _as_matrix(vectors, self.dim)
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} vectors but {ids.shape[0]} ids")
        if x.shape[0] == 0:
            return
        if np.unique(ids).shape[0] != ids.shape[0]:
            raise ValueError("ids must be unique")
        self._gpu_index = None
        total = self.ntotal + x.shape[0]
        ivf = self._ivf()
        # Cross the threshold -> IVF; an IVF that has grown 4x past what it was trained for -> retrain.
        if (ivf is None and total > self.ivf_threshold) or (ivf is not None and total > 4 * ivf.nlist ** 2):
            old_x, old_ids = self._vectors_and_ids()
            all_ids = np.concatenate([old_ids, ids])
            if np.unique(all_ids).shape[0] != all_ids.shape[0]:
                raise ValueError("ids already in the index")
            self._rebuild_ivf(np.concatenate([old_x, x]), all_ids)
            return
        self._index.add_with_ids(x, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n, k) float32 cosine, ids (n, k) int64); missing neighbours are id -1, score -inf."""
        q = _as_matrix(queries, self.dim)
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if self.ntotal == 0 or q.shape[0] == 0:
            return (np.full((q.shape[0], k), -np.inf, np.float32), np.full((q.shape[0], k), -1, np.int64))
        ivf = self._ivf()
        if ivf is not None:
            ivf.nprobe = self.nprobe
        index = self._search_index()
        k_eff = min(k, self.ntotal) if index is self._index else min(k, self.ntotal, 2048)  # GPU k limit
        scores, ids = index.search(q, k_eff)
        if k_eff < k:
            pad = k - k_eff
            scores = np.concatenate([scores, np.full((q.shape[0], pad), -np.inf, np.float32)], axis=1)
            ids = np.concatenate([ids, np.full((q.shape[0], pad), -1, np.int64)], axis=1)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    # --- GPU ---------------------------------------------------------------------------------

    def _search_index(self):
        """The GPU copy when wanted and working, else the CPU index."""
        if self._gpu_index is not None:
            return self._gpu_index
        if self._gpu_failed or self.use_gpu is False or not gpu_available():
            return self._index
        try:
            import faiss

            resources = faiss.StandardGpuResources()
            gpu = faiss.index_cpu_to_gpu(resources, _faiss_gpu_device(), self._index)
            gpu.referenced_resources = resources  # type: ignore[attr-defined]  # keep the resources alive as long as the index
            self._gpu_index = gpu
            return gpu
        except Exception:  # an old driver, an unsupported index type, out of memory: CPU still works
            self._gpu_failed = True
            if self.use_gpu:
                raise
            return self._index

    # --- persistence -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the CPU index (never a GPU one: those cannot be serialised)."""
        import faiss

        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, ivf_threshold: int = IVF_THRESHOLD,
             nprobe: int = DEFAULT_NPROBE, use_gpu: bool | None = None) -> VectorIndex:
        import faiss

        raw = faiss.read_index(str(Path(path)))
        if not isinstance(raw, faiss.IndexIDMap2):
            raise ValueError(f"{path}: not a musicops vector index (got {type(raw).__name__})")
        index = cls(raw.d, ivf_threshold=ivf_threshold, nprobe=nprobe, use_gpu=use_gpu)
        index._index = raw
        return index


def gpu_available() -> bool:
    """True when faiss sees a GPU and this build can use it (faiss-cpu has no StandardGpuResources)."""
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:
        return False


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """float32 (n, dim), L2-normalised (so inner product is cosine even if the caller forgot)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN/Inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _faiss_gpu_device() -> int:
    """Which GPU faiss uses (`MUSICOPS_FAISS_GPU`, default 0)."""
    from musicops.config import get_settings

    return get_settings().faiss_gpu
