"""Landmark-hash audio fingerprints (Wang 2003, "Shazam" style): literal reuse survives shift, gain,
noise and lossy re-encoding because only the *positions* of strong spectral peaks are hashed.

Pipeline: mono -> 8 kHz -> STFT (1024 / hop 256, 32 ms frames) -> log magnitude -> local maxima
(`maximum_filter`) kept at a bounded density (the strongest few per second, so gain never matters
and noise only adds weak peaks that lose the ranking) -> each anchor peak is paired with the next
few peaks in a target zone ahead of it -> hash = (f1, f2, dt) packed into 24 bits of a uint32,
stored with the anchor's frame. Matching looks each query hash up in a sorted posting table and
votes on (work, work_time - query_time): a real match piles votes on one offset, chance hits
scatter. numpy/scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicops.audio.convert import resample, to_mono

SAMPLE_RATE = 8000
N_FFT = 1024
HOP = 256
FRAME_S = HOP / SAMPLE_RATE  # 32 ms
MIN_BIN = 4  # ~31 Hz: below that is rumble and DC, never melody
PEAK_FREQ_RADIUS = 12  # bins (~94 Hz) either side a peak must dominate
PEAK_TIME_RADIUS = 5  # frames (~160 ms) either side
PEAKS_PER_SECOND = 30  # density limit: a peak needs fewer stronger peaks than this within +-0.5 s
PEAK_FLOOR_DB = 60.0  # ignore peaks this far below the clip's loudest bin (near-silence)
FANOUT = 8  # pairs per anchor
MAX_DT = 63  # frames (~2 s); 6 bits
MAX_DF = 160  # bins either side of the anchor in the target zone
_F_BITS, _DT_BITS = 9, 6
# Hashes seen in more postings than this are "stop words" (e.g. a drum hit shared by many works):
# they cost time and carry no identity.
MAX_POSTINGS_PER_HASH = 2000
# Partial reuse: a long query is scored over windows of this length, so a 5 s quote inside a 30 s
# asset is not diluted by the 25 s around it.
SCORE_WINDOW_S = 6.0
MIN_WINDOW_HASHES = 50  # a window with fewer query hashes is scored as if it had this many
QUERY_SHIFTS = 4  # sub-hop variants of a query (see `query_fingerprints`)
MAX_CANDIDATES = 50  # works (by raw aligned votes) that get a full windowed score


@dataclass(frozen=True)
class Fingerprint:
    """Hashes with their anchor frames; `frame_s` converts frames to seconds."""

    hashes: np.ndarray  # uint32
    times: np.ndarray  # int32 anchor frames
    frame_s: float = FRAME_S
    start_s: float = 0.0  # where frame 0 starts in the audio (a sub-hop shifted query variant)

    def __len__(self) -> int:
        return int(self.hashes.shape[0])


@dataclass(frozen=True)
class FingerprintMatch:
    """One work's best alignment: the work's time minus the query's time is `offset_s`."""

    work_id: int
    offset_s: float
    votes: int
    score: float  # aligned votes / query hashes (best window), in [0, 1]

    def to_dict(self) -> dict:
        return {"work_id": self.work_id, "offset_s": round(self.offset_s, 3), "votes": self.votes,
                "score": round(self.score, 5)}


def to_fingerprint_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float64 at 8 kHz (polyphase resampling, which also low-passes)."""
    x = to_mono(audio, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN/Inf samples")
    rate = int(sample_rate)
    if rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return resample(x, rate, SAMPLE_RATE)


def spectrogram_db(x: np.ndarray) -> np.ndarray:
    """Log-magnitude STFT (frames, bins) of 8 kHz mono audio, 0 dB = the loudest bin."""
    if x.shape[0] < N_FFT:
        x = np.pad(x, (0, N_FFT - x.shape[0]))
    n_frames = 1 + (x.shape[0] - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:n_frames]
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1))
    peak = float(magnitude.max())
    if peak <= 0.0:
        return np.full(magnitude.shape, -np.inf)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(magnitude / peak)


def find_peaks(spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, bins) of local maxima, density-limited (`_dense_enough`), sorted by frame then bin."""
    from scipy.ndimage import maximum_filter

    spec = spec.copy()
    spec[:, :MIN_BIN] = -np.inf
    local = maximum_filter(spec, size=(2 * PEAK_TIME_RADIUS + 1, 2 * PEAK_FREQ_RADIUS + 1), mode="constant",
                           cval=-np.inf)
    is_peak = (spec == local) & (spec > -PEAK_FLOOR_DB) & np.isfinite(spec)
    t, f = np.nonzero(is_peak)
    if t.size == 0:
        return t.astype(np.int32), f.astype(np.int32)
    strength = spec[t, f]
    order = np.lexsort((f, t))
    t, f, strength = t[order], f[order], strength[order]
    keep = _dense_enough(t, strength)
    return t[keep].astype(np.int32), f[keep].astype(np.int32)


def _dense_enough(t: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Keep a peak if fewer than PEAKS_PER_SECOND stronger peaks lie within +-0.5 s of it.

    A sliding window (not fixed 1 s blocks) so the choice does not depend on where the clip starts:
    an excerpt keeps the same peaks as the work it was cut from, away from its edges.
    """
    half = max(1, int(round(0.5 / FRAME_S)))
    lo = np.searchsorted(t, t - half, side="left")
    hi = np.searchsorted(t, t + half, side="right")
    stronger = np.zeros(t.shape[0], np.int64)
    width = int((hi - lo).max(initial=0))
    for step in range(width):  # vectorised over peaks, looped over window positions
        j = lo + step
        inside = j < hi
        j = np.minimum(j, t.shape[0] - 1)
        stronger += inside & (strength[j] > strength)
    return stronger < PEAKS_PER_SECOND


def pack_hashes(f1: np.ndarray, f2: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """(f1, f2, dt) -> uint32: 9 bits each frequency bin, 6 bits the frame gap."""
    f1 = np.minimum(f1, (1 << _F_BITS) - 1).astype(np.uint32)
    f2 = np.minimum(f2, (1 << _F_BITS) - 1).astype(np.uint32)
    return (f1 << (_F_BITS + _DT_BITS)) | (f2 << _DT_BITS) | dt.astype(np.uint32)


def hashes_from_peaks(t: np.ndarray, f: np.ndarray) -> Fingerprint:
    """Pair each anchor with its next FANOUT peaks inside the target zone (1..MAX_DT frames ahead)."""
    n = t.shape[0]
    if n < 2:
        return Fingerprint(np.zeros(0, np.uint32), np.zeros(0, np.int32))
    lookahead = min(n - 1, FANOUT * 6)
    anchor = np.arange(n)[:, None]
    other = anchor + np.arange(1, lookahead + 1)[None, :]
    valid = other < n
    other = np.where(valid, other, n - 1)
    dt = t[other] - t[anchor]
    df = f[other] - f[anchor]
    valid &= (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
    valid &= np.cumsum(valid, axis=1) <= FANOUT  # the first FANOUT valid partners only
    rows, cols = np.nonzero(valid)
    partner = other[rows, cols]
    hashes = pack_hashes(f[rows], f[partner], dt[rows, cols])
    return Fingerprint(hashes=hashes, times=t[rows].astype(np.int32))


def fingerprint(audio: np.ndarray, sample_rate: int) -> Fingerprint:
    """Landmark hashes of a clip (any rate, mono or (frames, channels))."""
    x = to_fingerprint_rate(audio, sample_rate)
    t, f = find_peaks(spectrogram_db(x))
    return hashes_from_peaks(t, f)


def query_fingerprints(audio: np.ndarray, sample_rate: int, shifts: int = QUERY_SHIFTS) -> list[Fingerprint]:
    """The query fingerprinted at `shifts` sub-hop offsets (0, hop/shifts, ...).

    A query cut at an arbitrary sample sees every peak between two of the work's frames, so some
    pair gaps come out one frame off and their hashes miss; one of the shifted variants lines up
    with the work's frame grid (audfprint's `--shifts` trick). `match` keeps each work's best.
    """
    x = to_fingerprint_rate(audio, sample_rate)
    out = []
    for k in range(max(1, int(shifts))):
        skip = (k * HOP) // max(1, int(shifts))
        t, f = find_peaks(spectrogram_db(x[skip:]))
        fp = hashes_from_peaks(t, f)
        out.append(Fingerprint(fp.hashes, fp.times, FRAME_S, skip / SAMPLE_RATE))
    return out


class FingerprintDB:
    """Hash -> postings of (work id, anchor frame), as three arrays sorted by hash (fast, npz-friendly)."""

    def __init__(self, keys: np.ndarray | None = None, work_ids: np.ndarray | None = None,
                 times: np.ndarray | None = None, frame_s: float = FRAME_S) -> None:
        self.keys = np.zeros(0, np.uint32) if keys is None else np.asarray(keys, np.uint32)
        self.work_ids = np.zeros(0, np.int32) if work_ids is None else np.asarray(work_ids, np.int32)
        self.times = np.zeros(0, np.int32) if times is None else np.asarray(times, np.int32)
        self.frame_s = float(frame_s)
        if not (self.keys.shape == self.work_ids.shape == self.times.shape):
            raise ValueError("keys, work_ids and times must have the same length")

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def work_set(self) -> set[int]:
        return set(np.unique(self.work_ids).tolist())

    def extend(self, items: list[tuple[int, Fingerprint]]) -> FingerprintDB:
        """A new database with these works' fingerprints added (postings stay sorted by hash)."""
        keys = [self.keys] + [fp.hashes for _, fp in items]
        works = [self.work_ids] + [np.full(len(fp), work_id, np.int32) for work_id, fp in items]
        times = [self.times] + [fp.times for _, fp in items]
        k, w, t = np.concatenate(keys), np.concatenate(works), np.concatenate(times)
        order = np.lexsort((t, w, k))
        return FingerprintDB(k[order], w[order], t[order], self.frame_s)

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as fh:  # a file handle: np.savez would otherwise append '.npz'
            np.savez(fh, keys=self.keys, work_ids=self.work_ids, times=self.times,
                     frame_s=np.float64(self.frame_s))

    @classmethod
    def load(cls, path: str | Path) -> FingerprintDB:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["keys"], data["work_ids"], data["times"], float(data["frame_s"]))


def match(query: Fingerprint | list[Fingerprint], db: FingerprintDB, *, min_votes: int = 3,
          max_postings: int = MAX_POSTINGS_PER_HASH, max_candidates: int = MAX_CANDIDATES) -> list[FingerprintMatch]:
    """Works sharing aligned hashes with the query, best score first.

    Votes are counted per (work, offset) with the neighbouring offset added (a sub-frame shift splits
    a peak's frame between two neighbours). Score = aligned votes / query hashes within the best
    SCORE_WINDOW_S window of the query (at least MIN_WINDOW_HASHES), so it sits in [0, 1] whatever
    the query's length. Given several variants of the query (`query_fingerprints`), each work keeps
    its best-scoring one.
    """
    if isinstance(query, list):
        best_by_work: dict[int, FingerprintMatch] = {}
        for variant in query:
            for m in match(variant, db, min_votes=min_votes, max_postings=max_postings,
                           max_candidates=max_candidates):
                kept = best_by_work.get(m.work_id)
                if kept is None or (m.score, m.votes) > (kept.score, kept.votes):
                    best_by_work[m.work_id] = m
        return sorted(best_by_work.values(), key=lambda m: (-m.score, -m.votes, m.work_id))
    if len(query) == 0 or len(db) == 0:
        return []
    lo = np.searchsorted(db.keys, query.hashes, side="left")
    hi = np.searchsorted(db.keys, query.hashes, side="right")
    counts = hi - lo
    counts[counts > max_postings] = 0
    total = int(counts.sum())
    if total == 0:
        return []
    q_index = np.repeat(np.arange(len(query)), counts)
    run_start = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    posting = run_start + np.arange(total)
    works = db.work_ids[posting].astype(np.int64)
    offsets = db.times[posting].astype(np.int64) - query.times[q_index].astype(np.int64)

    span = int(2 * (max(int(db.times.max(initial=0)), int(query.times.max(initial=0))) + 2))
    base = offsets + span // 2
    key = works * span + base
    uniq, votes = np.unique(key, return_counts=True)
    # Add the right-hand neighbour's votes: (o, o+1) pairs catch sub-frame shifts.
    nxt = np.searchsorted(uniq, uniq + 1)
    has_next = (nxt < uniq.size) & (uniq[np.minimum(nxt, uniq.size - 1)] == uniq + 1)
    paired = votes + np.where(has_next, votes[np.minimum(nxt, uniq.size - 1)], 0)
    work_of = uniq // span

    # Each work's best (offset, votes), vectorised: keys are sorted by work, so works are runs.
    starts = np.flatnonzero(np.r_[True, work_of[1:] != work_of[:-1]])
    ends = np.r_[starts[1:], paired.size]
    best_votes = np.maximum.reduceat(paired, starts)
    order = np.argsort(-best_votes, kind="stable")[:max_candidates]
    order = order[best_votes[order] >= min_votes]

    window = max(1, int(round(SCORE_WINDOW_S / query.frame_s)))
    results: list[FingerprintMatch] = []
    for i in order:
        best = starts[i] + int(np.argmax(paired[starts[i]:ends[i]]))
        work = int(work_of[best])
        offset = int(uniq[best] % span) - span // 2
        hit = (works == work) & ((offsets == offset) | (offsets == offset + 1))
        # Each query hash votes once for this alignment (a hash repeated in the work would count twice).
        hit_times = query.times[np.unique(q_index[hit])]
        score = _windowed_score(hit_times, query.times, window)
        results.append(FingerprintMatch(work_id=work, offset_s=offset * query.frame_s - query.start_s,
                                        votes=int(hit_times.size), score=score))
    results.sort(key=lambda m: (-m.score, -m.votes, m.work_id))
    return results


def _windowed_score(hit_times: np.ndarray, query_times: np.ndarray, window: int) -> float:
    """Best over half-overlapping windows of (aligned hits / query hashes) in that window."""
    best = 0.0
    last = int(query_times.max(initial=0))
    starts = range(0, max(1, last - window // 2 + 1), max(1, window // 2)) if last >= window else [0]
    for start in starts:
        end = start + window
        hits = int(((hit_times >= start) & (hit_times < end)).sum())
        n = int(((query_times >= start) & (query_times < end)).sum())
        best = max(best, hits / max(n, MIN_WINDOW_HASHES))
    return float(min(1.0, best))
