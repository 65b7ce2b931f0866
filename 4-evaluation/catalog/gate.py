"""The copyright gate: does a generated asset reuse or closely copy a catalog work?

Three kinds of evidence, scored per work:
- fingerprint (literal reuse: shift, gain, noise, lossy re-encode survive it): aligned landmark
  hash votes / query hashes, best 6 s window (`fingerprint.match`);
- alignment (transposed by up to 2 semitones, 3-6 % faster or slower, mixed under other music):
  mean frame cosine of whitened semitone spectrograms at the best key/tempo/offset (`alignment`);
- embedding (optional; only when the catalog has an embedder AND calibration found it separates):
  mean over query windows of the best cosine to that work's windows.

Fusion rule: each channel is put on a common "null" scale, z = (raw - loc) / scale, where loc is the
median and loc + scale the 99th percentile of that channel's best score over music that is not a
copy (measured by `calibrate` on the catalog's own works, leave-one-work-out); fused = max over the
channels in use of z, and the threshold on the fused score is chosen by calibration for the target
false-positive rate. Before calibration the fingerprint and alignment channels are used with scales
measured on rendered public-domain music (benchmarks/copyright_gate.py): z = 1.5 at a fingerprint
score of 0.25 or an alignment score of 0.40, above the highest unrelated same-style piece seen there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from musicops.evaluation.catalog import alignment as al
from musicops.evaluation.catalog import fingerprint as fpm

if TYPE_CHECKING:
    from musicops.evaluation.catalog.store import CatalogVersion
    from musicops.evaluation.embedders import Embedder

CHANNELS = ("fingerprint", "alignment", "embedding")
DEFAULT_FUSION: dict[str, dict[str, float] | None] = {"fingerprint": {"loc": 0.0, "scale": 0.25 / 1.5},
                                                      "alignment": {"loc": 0.1, "scale": 0.2},
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
    alignment_score: float | None = None
    semitones: int | None = None  # the query is this many semitones above the work (alignment channel)
    tempo: float | None = None  # query tempo / work tempo (alignment channel)
    channel: str = "fingerprint"  # the channel whose evidence set the fused score and the offsets

    @property
    def offset_s(self) -> float:
        """The work time the query's start lines up with (tempo-corrected when the query is re-timed)."""
        return self.work_offset_s - self.query_offset_s * (self.tempo or 1.0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("query_offset_s", "work_offset_s"):
            d[key] = round(float(d[key]), 3)
        for key in ("fingerprint_score", "alignment_score", "embedding_score", "fused_score"):  # no -inf in JSON
            d[key] = None if d[key] is None or not np.isfinite(d[key]) else round(float(d[key]), 5)
        return d


@dataclass(frozen=True)
class CopyrightVerdict:
    """Blocked or not, why, against which catalog version; `to_dict` goes into asset provenance.

    The copyright check's evidence for one asset; release wraps it into its own copyright gate's
    `musicops.release.gates.GateVerdict` (a gate's pass/fail status), a different thing.
    """

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
    alignment: al.AlignmentMatch | None = None

    @property
    def alignment_score(self) -> float | None:
        return None if self.alignment is None else self.alignment.score


def fusion_of(catalog: CatalogVersion) -> dict[str, dict[str, float] | None]:
    """The catalog's calibrated channel scales, or the uncalibrated default."""
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


def channel_z(c: Candidate, fusion: dict[str, Any]) -> dict[str, float]:
    """Each channel's z for one candidate (-inf where unused or absent)."""
    return {"fingerprint": z_score(c.fingerprint_score, fusion.get("fingerprint")),
            "alignment": z_score(c.alignment_score, fusion.get("alignment")),
            "embedding": z_score(c.embedding_score, fusion.get("embedding"))}



def candidates(catalog: CatalogVersion, audio: np.ndarray, sample_rate: int, *,
               embedder: Embedder | None = None, channels: tuple[str, ...] | None = None) -> list[Candidate]:
    """Raw evidence for every work that a channel finds. `channels` (default: those the catalog's
    fusion uses) limits the work: a channel the fusion leaves out is not computed (the embedder not
    even built), so a calibrated alignment-only gate answers a 10 s query in ~70 ms."""
    if channels is None:
        fusion = fusion_of(catalog)
        channels = tuple(c for c in CHANNELS if fusion.get(c))
    matches: dict[int, fpm.FingerprintMatch] = {}
    if "fingerprint" in channels:
        matches = {m.work_id: m for m in fpm.match(fpm.query_fingerprints(audio, sample_rate), catalog.fingerprints)}
    aligned: dict[int, al.AlignmentMatch] = {}
    if "alignment" in channels and len(catalog.alignment):
        aligned = {m.work_id: m for m in al.match(al.features(audio, sample_rate), catalog.alignment)}
    emb: dict[int, tuple[float, float, float]] = {}
    if "embedding" in channels and catalog.index is not None and catalog.index.ntotal > 0:
        if embedder is not None:
            catalog.use_embedder(embedder)
        model = catalog.embedder()
        assert model is not None
        vectors, starts = model.embed_windows(audio, sample_rate)
        emb = _embedding_scores(catalog, vectors, starts)
    out = []
    for work_id in sorted(set(matches) | set(emb) | set(aligned)):
        m = matches.get(work_id)
        e = emb.get(work_id)
        out.append(Candidate(
            work_id=work_id,
            fingerprint_score=m.score if m else 0.0,
            fingerprint_offset_s=m.offset_s if m else None,
            embedding_score=e[0] if e else None,
            embedding_query_offset_s=e[1] if e else None,
            embedding_work_offset_s=e[2] if e else None,
            alignment=aligned.get(work_id),
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
        zs = channel_z(c, fusion)
        fused = max(zs.values())
        located = {"fingerprint": c.fingerprint_offset_s is not None, "alignment": c.alignment is not None,
                   "embedding": c.embedding_query_offset_s is not None}
        # Landmark offsets are exact to a frame (32 ms); prefer them whenever that channel is above its null.
        if located["fingerprint"] and zs["fingerprint"] >= 1.0:
            channel = "fingerprint"
        else:
            channel = max((ch for ch in CHANNELS if located[ch]), key=lambda ch: (zs[ch], ch == "fingerprint"),
                          default="fingerprint")
        if channel == "alignment" and c.alignment is not None:
            query_offset, work_offset = c.alignment.query_offset_s, c.alignment.work_offset_s
        elif channel == "embedding":
            query_offset = float(c.embedding_query_offset_s or 0.0)
            work_offset = float(c.embedding_work_offset_s or 0.0)
        else:
            offset = float(c.fingerprint_offset_s or 0.0)
            query_offset, work_offset = max(0.0, -offset), max(0.0, offset)
        work = by_id.get(c.work_id)
        matches.append(CatalogMatch(
            work_id=c.work_id, title=work.title if work else "", path=work.path if work else "",
            query_offset_s=query_offset, work_offset_s=work_offset,
            fingerprint_score=float(c.fingerprint_score), embedding_score=c.embedding_score,
            fused_score=float(fused) if np.isfinite(fused) else float("-inf"),
            alignment_score=c.alignment_score,
            semitones=None if c.alignment is None else c.alignment.semitones,
            tempo=None if c.alignment is None else c.alignment.tempo, channel=channel))
    matches.sort(key=lambda m: (-m.fused_score, -m.fingerprint_score, m.work_id))
    return matches[: max(0, int(k))]


def check_asset(catalog: CatalogVersion, audio: np.ndarray, sr: int, threshold: float | None = None, *,
                k: int = 5, embedder: Embedder | None = None) -> CopyrightVerdict:
    """Block when the best fused score reaches the threshold (the catalog's calibrated one by default)."""
    used = threshold_of(catalog) if threshold is None else float(threshold)
    top = search(catalog, audio, sr, k=k, embedder=embedder)
    best = top[0] if top else None
    blocked = best is not None and best.fused_score >= used
    fusion = fusion_of(catalog)
    mode = "calibrated" if catalog.calibrated else "uncalibrated default"
    if best is None:
        reason = f"no catalog work shares material with the asset ({mode} threshold {used:.3f})"
    elif blocked:
        reason = (f"matches work {best.work_id} '{best.title}' at work offset {best.work_offset_s:.2f} s "
                  f"(asset offset {best.query_offset_s:.2f} s): fused score {best.fused_score:.3f} "
                  f">= {mode} threshold {used:.3f}")
    else:
        reason = (f"closest work {best.work_id} '{best.title}' scores {best.fused_score:.3f} "
                  f"< {mode} threshold {used:.3f}")
    return CopyrightVerdict(blocked=bool(blocked), threshold=used, top=top, reason=reason, catalog=catalog.ref,
                       calibrated=catalog.calibrated, fusion=fusion)
