"""The copyright gate: does a generated asset reuse or closely copy a catalog work?

Two kinds of evidence, fused per work:
- fingerprint score (literal reuse: shift, gain, noise, lossy re-encode survive it): aligned landmark
  hash votes / query hashes, best 6 s window (`fingerprint.match`);
- embedding score (near copies the hashes miss): for each of the query's embedder windows, the best
  cosine to any window of that work among the nearest neighbours; averaged over query windows.

Fusion rule: each channel is put on a common "null" scale, z = (raw - loc) / scale, where loc is the
median and loc + scale the 99th percentile of that channel's best score over unrelated audio
(measured by `calibrate`); fused = max over the channels in use of z. So z = 1 means "as high as
the top 1% of unrelated clips on that channel", and the threshold on the fused score is chosen by
calibration for the target false-positive rate. Before calibration only the fingerprint channel
is used (loc 0, scale 0.05, threshold 1.5, i.e. 7.5% aligned hashes): an uncalibrated embedder's
cosine scale is unknown, and guessing it would block or pass everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from musicops.evaluation.catalog import fingerprint as fpm

if TYPE_CHECKING:
    from musicops.evaluation.catalog.store import CatalogVersion
    from musicops.evaluation.embedders import Embedder

CHANNELS = ("fingerprint", "embedding")
DEFAULT_FUSION: dict[str, dict[str, float] | None] = {"fingerprint": {"loc": 0.0, "scale": 0.05},
                                                      "embedding": None}
DEFAULT_THRESHOLD = 1.5
NEIGHBOURS = 32  # catalog windows looked at per query window


@dataclass(frozen=True)
class CatalogMatch:
    """One catalog work and how strongly the query matches it (offsets in seconds)."""

    work_id: int
    title: str
    path: str
    query_offset_s: float
    work_offset_s: float
    fingerprint_score: float
    embedding_score: float | None
    fused_score: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("query_offset_s", "work_offset_s"):
            d[key] = round(float(d[key]), 3)
        for key in ("fingerprint_score", "embedding_score", "fused_score"):  # JSON has no -inf
            d[key] = None if d[key] is None or not np.isfinite(d[key]) else round(float(d[key]), 5)
        return d


@dataclass(frozen=True)
class GateVerdict:
    """Blocked or not, why, against which catalog version; `to_dict` goes into asset provenance."""

    blocked: bool
    threshold: float
    top: list[CatalogMatch]
    reason: str
    catalog: str = ""
    calibrated: bool = False
    fusion: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"blocked": self.blocked, "threshold": round(float(self.threshold), 6), "reason": self.reason,
                "catalog": self.catalog, "calibrated": self.calibrated, "fusion": self.fusion,
                "top": [m.to_dict() for m in self.top]}


@dataclass(frozen=True)
class Candidate:
    """Raw per-work evidence before fusion (what calibration stores for every sample)."""

    work_id: int
    fingerprint_score: float
    fingerprint_offset_s: float | None  # work time - query time
    embedding_score: float | None
    embedding_query_offset_s: float | None
    embedding_work_offset_s: float | None


def fusion_of(catalog: CatalogVersion) -> dict[str, dict[str, float] | None]:
    """The catalog's calibrated channel scales, or the fingerprint-only default."""
    fusion = catalog.info.get("fusion")
    return dict(fusion) if fusion else dict(DEFAULT_FUSION)


def threshold_of(catalog: CatalogVersion) -> float:
    value = catalog.info.get("threshold")
    return DEFAULT_THRESHOLD if value is None else float(value)


def z_score(raw: float | None, params: dict[str, float] | None) -> float:
    """A channel's raw score on the null scale; -inf when the channel is unused or absent."""
    if params is None or raw is None:
        return -np.inf
    return (float(raw) - float(params["loc"])) / max(float(params["scale"]), 1e-9)


def fuse(fingerprint_score: float, embedding_score: float | None, fusion: dict[str, Any]) -> float:
    """max over channels of z (see module doc); -inf if no channel is in use."""
    return max(z_score(fingerprint_score, fusion.get("fingerprint")),
               z_score(embedding_score, fusion.get("embedding")))


def candidates(catalog: CatalogVersion, audio: np.ndarray, sample_rate: int, *,
               embedder: Embedder | None = None) -> list[Candidate]:
    """Raw fingerprint and embedding evidence for every work that either channel finds."""
    matches = {m.work_id: m for m in fpm.match(fpm.query_fingerprints(audio, sample_rate), catalog.fingerprints)}
    emb: dict[int, tuple[float, float, float]] = {}
    if catalog.index is not None and catalog.index.ntotal > 0:
        if embedder is not None:
            catalog.use_embedder(embedder)
        model = catalog.embedder()
        assert model is not None
        vectors, starts = model.embed_windows(audio, sample_rate)
        emb = _embedding_scores(catalog, vectors, starts)
    out = []
    for work_id in sorted(set(matches) | set(emb)):
        m = matches.get(work_id)
        e = emb.get(work_id)
        out.append(Candidate(
            work_id=work_id,
            fingerprint_score=m.score if m else 0.0,
            fingerprint_offset_s=m.offset_s if m else None,
            embedding_score=e[0] if e else None,
            embedding_query_offset_s=e[1] if e else None,
            embedding_work_offset_s=e[2] if e else None,
        ))
    return out


def _embedding_scores(catalog: CatalogVersion, vectors: np.ndarray,
                      starts: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """Per work: (mean over query windows of the best cosine to that work, query/work offsets of the best pair).

    A work missing from a query window's neighbour list gets that list's lowest score for the window
    (an upper bound on its true cosine), so sparse neighbour lists never inflate a work.
    """
    assert catalog.index is not None
    k = min(NEIGHBOURS, catalog.index.ntotal)
    scores, ids = catalog.index.search(vectors, k)
    works, offsets = catalog.window_lookup(ids)
    floor = np.where(np.isfinite(scores), scores, np.inf).min(axis=1)
    out: dict[int, tuple[float, float, float]] = {}
    for work in np.unique(works[works >= 0]):
        mask = works == work
        per_window = np.where(mask, scores, -np.inf).max(axis=1)
        per_window = np.where(np.isfinite(per_window), per_window, floor)
        flat = int(np.argmax(np.where(mask, scores, -np.inf)))
        row, col = divmod(flat, k)
        out[int(work)] = (float(per_window.mean()), float(starts[row]), float(offsets[row, col]))
    return out


def search(catalog: CatalogVersion, audio: np.ndarray, sr: int, k: int = 5, *,
           embedder: Embedder | None = None) -> list[CatalogMatch]:
    """The `k` catalog works most similar to `audio`, by fused score (see module doc)."""
    fusion = fusion_of(catalog)
    by_id = catalog.work_by_id
    matches = []
    for c in candidates(catalog, audio, sr, embedder=embedder):
        fused = fuse(c.fingerprint_score, c.embedding_score, fusion)
        fp_z = z_score(c.fingerprint_score, fusion.get("fingerprint"))
        emb_z = z_score(c.embedding_score, fusion.get("embedding"))
        use_fp = c.fingerprint_offset_s is not None and (fp_z >= emb_z or c.embedding_query_offset_s is None)
        if use_fp:
            offset = float(c.fingerprint_offset_s or 0.0)
            query_offset, work_offset = max(0.0, -offset), max(0.0, offset)
        else:
            query_offset = float(c.embedding_query_offset_s or 0.0)
            work_offset = float(c.embedding_work_offset_s or 0.0)
        work = by_id.get(c.work_id)
        matches.append(CatalogMatch(
            work_id=c.work_id, title=work.title if work else "", path=work.path if work else "",
            query_offset_s=query_offset, work_offset_s=work_offset,
            fingerprint_score=float(c.fingerprint_score), embedding_score=c.embedding_score,
            fused_score=float(fused) if np.isfinite(fused) else float("-inf")))
    matches.sort(key=lambda m: (-m.fused_score, -m.fingerprint_score, m.work_id))
    return matches[: max(0, int(k))]


def check_asset(catalog: CatalogVersion, audio: np.ndarray, sr: int, threshold: float | None = None, *,
                k: int = 5, embedder: Embedder | None = None) -> GateVerdict:
    """Block when the best fused score reaches the threshold (the catalog's calibrated one by default)."""
    used = threshold_of(catalog) if threshold is None else float(threshold)
    top = search(catalog, audio, sr, k=k, embedder=embedder)
    best = top[0] if top else None
    blocked = best is not None and best.fused_score >= used
    fusion = fusion_of(catalog)
    mode = "calibrated" if catalog.calibrated else "uncalibrated default (fingerprint only)"
    if best is None:
        reason = f"no catalog work shares material with the asset ({mode} threshold {used:.3f})"
    elif blocked:
        reason = (f"matches work {best.work_id} '{best.title}' at work offset {best.work_offset_s:.2f} s "
                  f"(asset offset {best.query_offset_s:.2f} s): fused score {best.fused_score:.3f} "
                  f">= {mode} threshold {used:.3f}")
    else:
        reason = (f"closest work {best.work_id} '{best.title}' scores {best.fused_score:.3f} "
                  f"< {mode} threshold {used:.3f}")
    return GateVerdict(blocked=bool(blocked), threshold=used, top=top, reason=reason, catalog=catalog.ref,
                       calibrated=catalog.calibrated, fusion=fusion)
