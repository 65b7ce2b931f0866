"""Calibrate the copyright gate's threshold on replicas of the catalog's own works.

Positives: random excerpts of catalog works under each transform a copier (or a model that memorised
a work) might apply: time shift, gain, noise, lossy re-encode, tempo (varispeed), pitch (duration
kept), and mixing under unrelated audio. Negatives: excerpts of synthetic music that is NOT in the
catalog (another seed), spread round-robin over the same transforms, so a transform that inflates
scores by itself shows up as false positives.

Every sample is scored with the gate's raw per-work evidence; then, on the negatives, each channel's
null scale is fitted (loc = median, loc + scale = 99th percentile of the best score), each channel
subset ({fingerprint}, {embedding}, both) gets the smallest threshold whose false-positive rate on
the negatives is <= target_fpr, and the subset with the highest mean TPR over transforms wins (ties:
fewer channels). At least `ceil(2 / target_fpr)` negatives are required (200 for 1%), so the chosen
threshold sits above at least two observed false positives' worth of tail instead of extrapolating.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicops.evaluation.catalog import gate

if TYPE_CHECKING:
    from musicops.config import Settings
    from musicops.evaluation.catalog.store import CatalogVersion
    from musicops.evaluation.embedders import Embedder

TRANSFORMS = ("shift", "gain", "noise", "reencode", "tempo", "pitch", "mix")
LITERAL_TRANSFORMS = ("shift", "gain", "noise", "reencode")  # what fingerprints must carry
GAIN_DB = 6.0
NOISE_SNR_DB = 20.0
TEMPO_CHANGE = 0.05
PITCH_SEMITONES = 1.0
MIX_UNDER_DB = 6.0
NEGATIVE_SEED_OFFSET = 7_919_000  # negatives' synth seed = this + seed: never a catalog's own seed
SCALE_FLOOR = {"fingerprint": 0.005, "embedding": 0.001}  # keeps z finite when negatives are all equal


@dataclass(frozen=True)
class TransformResult:
    transform: str
    n_positive: int
    tpr: float  # positives blocked at the threshold
    top1_correct: float  # positives blocked AND attributed to the work they were cut from
    n_negative: int
    fpr: float
    median_positive_score: float


@dataclass
class CalibrationReport:
    catalog: str
    target_fpr: float
    threshold: float
    channels: list[str]
    fusion: dict[str, Any]
    n_negatives: int
    fpr: float  # over all negatives
    rows: list[TransformResult]
    seed: int
    excerpt_s: float
    min_negatives: int
    channel_choice: dict[str, float] = field(default_factory=dict)  # mean TPR per channel subset
    unreadable_works: list[str] = field(default_factory=list)  # moved/changed files left out of positives
    created_at: str = ""
    elapsed_s: float = 0.0

    def row(self, transform: str) -> TransformResult:
        return next(r for r in self.rows if r.transform == transform)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [asdict(r) for r in self.rows]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationReport:
        values = dict(d)
        values["rows"] = [TransformResult(**r) for r in d["rows"]]
        return cls(**values)

    def to_markdown(self) -> str:
        lines = [
            f"Calibration of `{self.catalog}`: threshold **{self.threshold:.4f}** on the fused score "
            f"(channels: {', '.join(self.channels)}), target FPR {self.target_fpr:g}, measured FPR "
            f"{self.fpr:.4f} on {self.n_negatives} negatives; {self.excerpt_s:g} s excerpts, seed {self.seed}.",
            "",
            "| transform | positives | TPR | top-1 correct | negatives | FPR | median fused (pos) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.rows:
            lines.append(f"| {r.transform} | {r.n_positive} | {r.tpr:.3f} | {r.top1_correct:.3f} | "
                         f"{r.n_negative} | {r.fpr:.3f} | {r.median_positive_score:.3f} |")
        return "\n".join(lines) + "\n"


@dataclass
class _Sample:
    transform: str
    source_work: int | None  # None for negatives
    work_ids: np.ndarray
    fp: np.ndarray
    emb: np.ndarray  # NaN where the embedding channel has no score


def calibrate(catalog: CatalogVersion, settings: Settings | None = None, target_fpr: float = 0.01, seed: int = 0,
              n_per_transform: int = 40, n_negatives: int = 280, *, excerpt_s: float = 5.0,
              min_negatives: int | None = None, embedder: Embedder | None = None,
              save: bool = True) -> CalibrationReport:
    """Measure, choose the threshold, save it (and the report) into the catalog's catalog.json."""
    from musicops.config import get_settings
    from musicops.evaluation.catalog.store import update_info

    settings = settings or get_settings()
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    required = math.ceil(2.0 / target_fpr) if min_negatives is None else int(min_negatives)
    if n_negatives < required:
        raise ValueError(f"{n_negatives} negatives cannot show an FPR of {target_fpr:g}: need at least "
                         f"{required} (= 2 / target_fpr)")
    if n_per_transform < 1:
        raise ValueError("n_per_transform must be >= 1")
    started = time.perf_counter()
    if embedder is not None:
        catalog.use_embedder(embedder)
    rate = int(np.bincount([w.sample_rate for w in catalog.works]).argmax())  # the catalog's usual rate
    rng = np.random.default_rng([seed, 1])
    n_excerpt = int(round(excerpt_s * rate))
    unrelated = _unrelated_audio(max(4, math.ceil(n_negatives / 8)), seed, max(excerpt_s * 2 + 2, 8.0), rate)
    # Positives: (transform, work) pairs, works drawn without replacement while they last; then
    # grouped by work so each file is decoded once and never all at once (catalogs can be large).
    order = rng.permutation(len(catalog.works))
    plan = [(name, catalog.works[int(order[(j + t) % len(order)])])
            for t, name in enumerate(TRANSFORMS) for j in range(n_per_transform)]
    by_work: dict[int, list[str]] = {}
    for name, work in plan:
        by_work.setdefault(work.work_id, []).append(name)

    settings.home.mkdir(parents=True, exist_ok=True)
    samples: list[_Sample] = []
    unreadable: list[str] = []
    with tempfile.TemporaryDirectory(dir=settings.home, prefix=".calibrate-") as scratch:
        ops = _transforms(rate, Path(scratch))
        for work_id, names in by_work.items():
            audio = _load_work(catalog.work_by_id[work_id], rate)
            if audio is None:
                unreadable.append(catalog.work_by_id[work_id].path)
                continue
            for name in names:
                x = _excerpt(audio, n_excerpt, rng)
                background = _excerpt(unrelated[int(rng.integers(len(unrelated)))], x.shape[0], rng)
                samples.append(_score(catalog, ops[name](x, rng, background), rate, name, work_id))
        if not samples:
            from musicops.evaluation.catalog.store import CatalogError

            raise CatalogError(f"catalog {catalog.ref}: none of its works' files are readable and unchanged "
                               f"({len(unreadable)} tried); calibration needs the catalog audio")
        for j in range(n_negatives):
            name = TRANSFORMS[j % len(TRANSFORMS)]
            clip = int(j % len(unrelated))
            x = _excerpt(unrelated[clip], n_excerpt, rng)
            other = unrelated[(clip + 1 + int(rng.integers(len(unrelated) - 1))) % len(unrelated)]
            samples.append(_score(catalog, ops[name](x, rng, _excerpt(other, x.shape[0], rng)), rate, name, None))

    report = _choose(catalog, samples, target_fpr, has_embedding=catalog.index is not None)
    report.unreadable_works = unreadable
    report.seed, report.excerpt_s, report.min_negatives = int(seed), float(excerpt_s), required
    report.created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report.elapsed_s = round(time.perf_counter() - started, 2)
    if save:
        update_info(catalog, {"threshold": report.threshold, "fusion": report.fusion,
                              "calibration": report.to_dict()})
    return report


# --- scoring and the choice ----------------------------------------------------------------------

def _score(catalog: CatalogVersion, audio: np.ndarray, rate: int, transform: str, source: int | None) -> _Sample:
    found = gate.candidates(catalog, audio, rate)
    return _Sample(
        transform=transform, source_work=source,
        work_ids=np.array([c.work_id for c in found], np.int64),
        fp=np.array([c.fingerprint_score for c in found], np.float64),
        emb=np.array([np.nan if c.embedding_score is None else c.embedding_score for c in found], np.float64))


def _best(sample: _Sample, fusion: dict[str, Any]) -> tuple[float, int | None]:
    """The sample's fused score (max over works) and the work that gives it."""
    if sample.work_ids.size == 0:
        return -math.inf, None
    fused = np.full(sample.work_ids.shape, -np.inf)
    if fusion.get("fingerprint"):
        p = fusion["fingerprint"]
        fused = np.maximum(fused, (sample.fp - p["loc"]) / p["scale"])
    if fusion.get("embedding"):
        p = fusion["embedding"]
        z = (sample.emb - p["loc"]) / p["scale"]
        fused = np.maximum(fused, np.where(np.isnan(z), -np.inf, z))
    i = int(np.argmax(fused))
    return float(fused[i]), int(sample.work_ids[i])


def _null_scale(values: np.ndarray, floor: float) -> dict[str, float]:
    loc = float(np.median(values))
    return {"loc": round(loc, 6), "scale": round(max(float(np.quantile(values, 0.99)) - loc, floor), 6)}


def threshold_for(negative_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest t with #(negatives >= t) / n <= target_fpr (a block is `score >= t`)."""
    s = np.sort(np.asarray(negative_scores, np.float64))[::-1]
    allowed = int(math.floor(target_fpr * s.size + 1e-9))
    if allowed >= s.size:
        return float(s[-1])
    return float(np.nextafter(s[allowed], np.inf))


def _choose(catalog: CatalogVersion, samples: list[_Sample], target_fpr: float,
            has_embedding: bool) -> CalibrationReport:
    negatives = [s for s in samples if s.source_work is None]
    null = {"fingerprint": _null_scale(np.array([s.fp.max(initial=0.0) for s in negatives]),
                                       SCALE_FLOOR["fingerprint"])}
    emb_best = np.array([np.nanmax(s.emb) if s.emb.size and np.isfinite(s.emb).any() else np.nan
                         for s in negatives])
    subsets: list[tuple[str, ...]] = [("fingerprint",)]
    if has_embedding and np.isfinite(emb_best).any():
        null["embedding"] = _null_scale(emb_best[np.isfinite(emb_best)], SCALE_FLOOR["embedding"])
        subsets += [("embedding",), ("fingerprint", "embedding")]

    best: CalibrationReport | None = None
    choice: dict[str, float] = {}
    for subset in subsets:
        fusion = {c: (null[c] if c in subset else None) for c in gate.CHANNELS}
        report = _evaluate(catalog, samples, fusion, list(subset), target_fpr)
        mean_tpr = float(np.mean([r.tpr for r in report.rows]))
        choice["+".join(subset)] = round(mean_tpr, 4)
        if best is None or mean_tpr > float(np.mean([r.tpr for r in best.rows])) + 1e-12:
            best = report
    assert best is not None
    best.channel_choice = choice
    return best


def _evaluate(catalog: CatalogVersion, samples: list[_Sample], fusion: dict[str, Any], channels: list[str],
              target_fpr: float) -> CalibrationReport:
    scored = [(s, *_best(s, fusion)) for s in samples]
    neg = np.array([score for s, score, _ in scored if s.source_work is None])
    threshold = threshold_for(neg, target_fpr)
    rows = []
    for name in TRANSFORMS:
        pos = [(score, work == s.source_work) for s, score, work in scored
               if s.source_work is not None and s.transform == name]
        negs = [score for s, score, _ in scored if s.source_work is None and s.transform == name]
        rows.append(TransformResult(
            transform=name, n_positive=len(pos),
            tpr=round(float(np.mean([p >= threshold for p, _ in pos])) if pos else 0.0, 4),
            top1_correct=round(float(np.mean([p >= threshold and ok for p, ok in pos])) if pos else 0.0, 4),
            n_negative=len(negs),
            fpr=round(float(np.mean([n >= threshold for n in negs])) if negs else 0.0, 4),
            median_positive_score=round(float(np.median([p for p, _ in pos])) if pos else 0.0, 4)))
    return CalibrationReport(catalog=catalog.ref, target_fpr=target_fpr, threshold=threshold, channels=channels,
                             fusion=fusion, n_negatives=int(neg.size), fpr=round(float(np.mean(neg >= threshold)), 4),
                             rows=rows, seed=0, excerpt_s=0.0, min_negatives=0)


# --- audio: sources, negatives, transforms ---------------------------------------------------------

def _load_work(work: Any, rate: int) -> np.ndarray | None:
    """A work's mono audio at `rate`, from its recorded path; None if moved, changed or unreadable."""
    from musicops.audio.io import AudioError, read_audio
    from musicops.hashing import file_sha256

    try:
        if file_sha256(work.path) != work.sha256:
            return None
        audio = read_audio(work.path)
    except (OSError, AudioError):
        return None
    return _to_rate(audio.mono().astype(np.float64), audio.sample_rate, rate)


def _unrelated_audio(n: int, seed: int, duration_s: float, rate: int) -> list[np.ndarray]:
    """Synthetic music from a seed no catalog is built with (see NEGATIVE_SEED_OFFSET)."""
    from musicops.datasets.synth import plan_clip, render_clip

    neg_seed = NEGATIVE_SEED_OFFSET + int(seed)
    return [render_clip(plan_clip(neg_seed, i), neg_seed, duration_s, rate).astype(np.float64) for i in range(n)]


def _to_rate(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g)


def _excerpt(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples from a random (sample-exact) offset; the whole clip when it is shorter."""
    if x.shape[0] <= n:
        return x.copy()
    start = int(rng.integers(0, x.shape[0] - n + 1))
    return x[start:start + n].copy()


Transform = Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]


def _transforms(rate: int, scratch: Path) -> dict[str, Transform]:
    """name -> f(excerpt, rng, unrelated audio of the same length) -> transformed audio."""
    from scipy.signal import resample

    def shift(x, rng, other):  # the excerpt already starts at a random sample
        return x

    def gain(x, rng, other):
        return x * 10.0 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20.0)

    def noise(x, rng, other):
        power = float(np.mean(x ** 2)) or 1e-8
        return x + rng.standard_normal(x.shape[0]) * math.sqrt(power / 10.0 ** (NOISE_SNR_DB / 10.0))

    def reencode(x, rng, other):
        from musicops.audio.io import read_audio
        from musicops.audio.postprocess import encode

        path = scratch / "reencode.ogg"
        path.write_bytes(encode(x, rate, "ogg"))
        return read_audio(path).mono().astype(np.float64)

    def tempo(x, rng, other):
        factor = 1.0 + TEMPO_CHANGE * (1 if rng.random() < 0.5 else -1)
        return resample(x, max(1, int(round(x.shape[0] / factor))))

    def pitch(x, rng, other):
        ratio = 2.0 ** (PITCH_SEMITONES * (1 if rng.random() < 0.5 else -1) / 12.0)
        stretched = time_stretch(x, ratio)  # `ratio` times longer, same pitch ...
        return resample(stretched, x.shape[0])  # ... then played `ratio` times faster: pitch * ratio

    def mix(x, rng, other):
        level = math.sqrt(float(np.mean(other ** 2)) or 1e-8) * 10.0 ** (-MIX_UNDER_DB / 20.0)
        y = other + x * (level / math.sqrt(float(np.mean(x ** 2)) or 1e-8))
        peak = float(np.max(np.abs(y))) or 1.0
        return y / peak * 0.9 if peak > 0.99 else y

    return {"shift": shift, "gain": gain, "noise": noise, "reencode": reencode, "tempo": tempo,
            "pitch": pitch, "mix": mix}


def time_stretch(x: np.ndarray, factor: float, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """Phase-vocoder time stretch: about `factor` times longer, pitch unchanged (numpy only)."""
    window = np.hanning(n_fft)
    padded = np.pad(x, (n_fft // 2, n_fft // 2 + n_fft))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    spec = np.fft.rfft(frames * window, axis=1)
    steps = np.arange(0.0, spec.shape[0] - 1, 1.0 / factor)
    advance = 2.0 * np.pi * hop * np.arange(spec.shape[1]) / n_fft
    phase = np.angle(spec[0])
    out = np.zeros((steps.shape[0], spec.shape[1]), np.complex128)
    for k, step in enumerate(steps):
        i = int(step)
        alpha = step - i
        magnitude = (1.0 - alpha) * np.abs(spec[i]) + alpha * np.abs(spec[i + 1])
        out[k] = magnitude * np.exp(1j * phase)
        delta = np.angle(spec[i + 1]) - np.angle(spec[i]) - advance
        delta -= 2.0 * np.pi * np.round(delta / (2.0 * np.pi))
        phase = phase + advance + delta
    frames_out = np.fft.irfft(out, n=n_fft, axis=1) * window
    length = (steps.shape[0] - 1) * hop + n_fft
    y = np.zeros(length)
    norm = np.zeros(length)
    for k in range(steps.shape[0]):
        y[k * hop:k * hop + n_fft] += frames_out[k]
        norm[k * hop:k * hop + n_fft] += window ** 2
    y /= np.maximum(norm, 1e-8)
    target = int(round(x.shape[0] * factor))
    return y[n_fft // 2:n_fft // 2 + target]
