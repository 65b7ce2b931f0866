"""Calibrate the copyright gate on music that looks like the catalog, and state an FPR that holds.

Negatives (music that is NOT a copy) come from the catalog itself, leave-one-work-out: excerpts of
each work, processed like delivered files (gain, noise, re-encode, mixing), scored against the
catalog *without that work* (and without any work mixed into it). Catalogs are usually one style in one instrumentation, so this null is as
hard as the originals the gate will see; a folder of known-original music (`negatives_dir`) can be
added. musicops' own synthetic clips are never used as negatives: their null is far narrower than
real music's (the gate blocked half of real originals when calibrated on them), and a catalog made
of them is flagged in the report.

Positives: excerpts of catalog works under what copyists do: time shift, gain, noise, lossy
re-encode (MP3 / Vorbis), tempo +-3..6 % with pitch kept, pitch +-1..2 semitones with tempo kept
(modelled separately), and mixed 6 dB under other music.

Works are split in two folds. On the fit fold: each channel's null scale, its separation (ROC AUC,
TPR at the target FPR) and whether it is used at all (a channel whose AUC is below
MIN_CHANNEL_AUC, such as a random-init embedder, is left out and the report says why); the channel
set with the best mean TPR; the threshold (smallest value with FPR <= target). On the held-out
fold: the FPR that is stated, as an upper 95 % Clopper-Pearson bound beside the point estimate and
the number of negatives it rests on, and the TPR per transform.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicops.errors import MusicopsError
from musicops.evaluation.catalog import gate

if TYPE_CHECKING:
    from musicops.config import Settings
    from musicops.evaluation.catalog.store import CatalogVersion
    from musicops.evaluation.embedders import Embedder

TRANSFORMS = ("shift", "gain", "noise", "reencode", "tempo", "pitch", "mix")
LITERAL_TRANSFORMS = ("shift", "gain", "noise", "reencode")  # what fingerprints must carry
# Originals get the mild processing a delivered file sees. Not tempo/pitch: the phase vocoder blurs
# an excerpt, and blurred originals scored lower against other works than clean ones (max 0.26-0.27
# vs 0.29-0.31 alignment on the real-music set), which made the null lighter than real originals.
NEGATIVE_PROCESSING = ("shift", "gain", "noise", "reencode", "mix")
GAIN_DB = (6.0, 12.0)
NOISE_SNR_DB = 15.0
TEMPO_CHANGES = (0.03, 0.06)  # +- this fraction, pitch kept
PITCH_STEPS = (1, 2)  # +- semitones, tempo kept
MIX_UNDER_DB = 6.0
MIN_CHANNEL_AUC = 0.8  # below this a channel does not separate copies from originals
CHANNEL_GAIN = 0.02  # mean TPR a larger channel set must add over a smaller one
MIN_WORKS = 6  # leave-one-work-out needs works on both folds and several left to match against
SCALE_FLOOR = {"fingerprint": 0.005, "alignment": 0.005, "embedding": 0.001}
CONFIDENCE = 0.95


class CalibrationError(MusicopsError, ValueError):
    """Calibration cannot give an honest figure (too few works or negatives, unreadable audio)."""


@dataclass(frozen=True)
class TransformResult:
    transform: str
    n_positive: int
    tpr: float  # held-out positives blocked at the threshold
    top1_correct: float  # held-out positives blocked AND attributed to the work they were cut from
    n_negative: int
    fpr: float
    median_positive_score: float


@dataclass(frozen=True)
class ChannelReport:
    channel: str
    auc: float | None  # fit fold: P(copy's score for its work > an original's best score)
    tpr_at_target: float | None  # fit fold, with the channel alone at the target FPR
    used: bool
    reason: str


@dataclass
class CalibrationReport:
    catalog: str
    target_fpr: float
    threshold: float
    channels: list[str]
    fusion: dict[str, Any]
    n_negatives: int  # held-out negatives the stated FPR rests on
    fpr: float  # held-out point estimate
    fpr_upper_bound: float  # one-sided 95 % Clopper-Pearson upper bound: the stated figure
    rows: list[TransformResult]
    seed: int
    excerpt_s: float
    n_fit_negatives: int = 0
    fit_fpr: float = 0.0
    min_negatives: int = 0
    channel_report: list[ChannelReport] = field(default_factory=list)
    channel_choice: dict[str, float] = field(default_factory=dict)  # fit-fold mean TPR per channel set
    negative_sources: dict[str, int] = field(default_factory=dict)  # where the negatives came from
    synthetic_catalog: bool = False
    warnings: list[str] = field(default_factory=list)
    unreadable_works: list[str] = field(default_factory=list)  # moved/changed files left out
    tpr: float = 0.0  # held-out, all transforms
    created_at: str = ""
    elapsed_s: float = 0.0

    def row(self, transform: str) -> TransformResult:
        return next(r for r in self.rows if r.transform == transform)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = [asdict(r) for r in self.rows]
        d["channel_report"] = [asdict(c) for c in self.channel_report]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationReport:
        values = dict(d)
        values["rows"] = [TransformResult(**r) for r in d["rows"]]
        values["channel_report"] = [ChannelReport(**c) for c in d.get("channel_report", [])]
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def stated_fpr(self) -> str:
        return (f"FPR <= {self.fpr_upper_bound:.4f} (95 % upper bound; {self.fpr:.4f} measured on "
                f"{self.n_negatives} held-out negatives)")

    def to_markdown(self) -> str:
        lines = [
            f"Calibration of `{self.catalog}`: threshold **{self.threshold:.4f}** on the fused score "
            f"(channels: {', '.join(self.channels)}), target FPR {self.target_fpr:g}; {self.stated_fpr()}; "
            f"TPR {self.tpr:.3f} on held-out copies; {self.excerpt_s:g} s excerpts, seed {self.seed}.",
            "",
            "| channel | AUC | TPR at target | used | why |",
            "| --- | ---: | ---: | --- | --- |",
        ]
        for c in self.channel_report:
            lines.append(f"| {c.channel} | {_fmt(c.auc)} | {_fmt(c.tpr_at_target)} | {'yes' if c.used else 'no'} "
                         f"| {c.reason} |")
        lines += ["", "| transform | positives | TPR | top-1 correct | negatives | FPR | median fused (pos) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in self.rows:
            lines.append(f"| {r.transform} | {r.n_positive} | {r.tpr:.3f} | {r.top1_correct:.3f} | "
                         f"{r.n_negative} | {r.fpr:.3f} | {r.median_positive_score:.3f} |")
        lines += [f"\n**warning:** {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@dataclass
class _Sample:
    transform: str
    source_work: int | None  # the work a positive was cut from; None for negatives
    excluded: frozenset[int]  # works this sample may not be matched against (leave-one-work-out, mixes)
    fold: int  # 0 = fit, 1 = held out
    work_ids: np.ndarray
    scores: dict[str, np.ndarray]  # channel -> per-work raw score (NaN where the channel found nothing)

    @property
    def positive(self) -> bool:
        return self.source_work is not None

    def allowed(self) -> np.ndarray:
        return np.array([w not in self.excluded for w in self.work_ids.tolist()], bool)


ProgressFn = Callable[[int, int], None]


def calibrate(catalog: CatalogVersion, settings: Settings | None = None, target_fpr: float = 0.01, seed: int = 0,
              n_per_transform: int = 40, n_negatives: int = 1000, *, excerpt_s: float = 10.0,
              negatives_dir: str | Path | None = None, min_negatives: int | None = None,
              embedder: Embedder | None = None, save: bool = True,
              progress: ProgressFn | None = None) -> CalibrationReport:
    """Measure, choose channels and threshold, save them (and the report) into the catalog's catalog.json."""
    from musicops.config import get_settings
    from musicops.evaluation.catalog.store import update_info

    settings = settings or get_settings()
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    required = math.ceil(2.0 / target_fpr) if min_negatives is None else int(min_negatives)
    if n_negatives < 2 * required:
        raise ValueError(f"{n_negatives} negatives cannot show an FPR of {target_fpr:g}: need at least "
                         f"{2 * required} (2 / target_fpr to fit the threshold, as many again held out)")
    if n_per_transform < 2:
        raise ValueError("n_per_transform must be >= 2 (one per fold)")
    started = time.perf_counter()
    if embedder is not None:
        catalog.use_embedder(embedder)
    rate = int(np.bincount([w.sample_rate for w in catalog.works]).argmax())  # the catalog's usual rate
    rng = np.random.default_rng([seed, 1])
    n_excerpt = int(round(excerpt_s * rate))
    channels = tuple(c for c in gate.CHANNELS if c != "embedding" or catalog.index is not None)

    audio: dict[int, np.ndarray] = {}
    unreadable: list[str] = []
    for work in catalog.works:
        x = _load_work(work, rate)
        if x is None:
            unreadable.append(work.path)
        else:
            audio[work.work_id] = x
    if len(audio) < MIN_WORKS:
        raise CalibrationError(
            f"catalog {catalog.ref}: {len(audio)} readable, unchanged works; calibration needs at least {MIN_WORKS} "
            f"(leave-one-work-out negatives and two folds)" + (f"; {len(unreadable)} moved or changed" if unreadable
                                                                 else ""))
    outside = _read_negatives(negatives_dir, rate) if negatives_dir is not None else []
    ids = sorted(audio)
    order = [ids[int(i)] for i in rng.permutation(len(ids))]
    fold_of = {work_id: k % 2 for k, work_id in enumerate(order)}
    synthetic = _synthetic_share(catalog) > 0.5

    total = len(TRANSFORMS) * n_per_transform + n_negatives
    done = 0
    samples: list[_Sample] = []
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.home, prefix=".calibrate-") as scratch:
        ops = _transforms(rate, Path(scratch))

        def background(exclude: int) -> tuple[np.ndarray, int | None]:
            """Other music to mix under: outside negatives when given, else another catalog work."""
            if outside and rng.random() < 0.5:
                return outside[int(rng.integers(len(outside)))][1], None
            other = order[int(rng.integers(len(order)))]
            while other == exclude:
                other = order[int(rng.integers(len(order)))]
            return audio[other], other

        def score(x: np.ndarray, name: str, source: int | None, excluded: set[int], fold: int) -> None:
            nonlocal done
            found = gate.candidates(catalog, x, rate, channels=channels)
            samples.append(_Sample(
                transform=name, source_work=source, excluded=frozenset(excluded), fold=fold,
                work_ids=np.array([c.work_id for c in found], np.int64),
                scores={"fingerprint": np.array([c.fingerprint_score for c in found], np.float64),
                        "alignment": np.array([np.nan if c.alignment_score is None else c.alignment_score
                                               for c in found], np.float64),
                        "embedding": np.array([np.nan if c.embedding_score is None else c.embedding_score
                                               for c in found], np.float64)}))
            done += 1
            if progress is not None:
                progress(done, total)

        for t, name in enumerate(TRANSFORMS):  # positives: works round-robin from a shuffled order
            for j in range(n_per_transform):
                work_id = order[(j + t) % len(order)]
                x = _excerpt(audio[work_id], n_excerpt, rng)
                other, other_id = background(work_id)
                y = ops[name](x, rng, _excerpt(other, x.shape[0], rng))
                score(y, name, work_id, set() if name != "mix" or other_id is None else {other_id},
                      fold_of[work_id])
        n_outside = n_negatives // 3 if outside else 0  # a third of the null from the user's folder
        for j in range(n_negatives):
            name = NEGATIVE_PROCESSING[j % len(NEGATIVE_PROCESSING)]
            if j < n_outside:
                k = j % len(outside)
                x, excluded, fold = _excerpt(outside[k][1], n_excerpt, rng), set(), k % 2
                other, other_id = background(-1)
            else:
                work_id = order[j % len(order)]
                x, excluded, fold = _excerpt(audio[work_id], n_excerpt, rng), {work_id}, fold_of[work_id]
                other, other_id = background(work_id)
            if name == "mix" and other_id is not None:
                excluded.add(other_id)
            score(ops[name](x, rng, _excerpt(other, x.shape[0], rng)), name, None, excluded, fold)

    report = _choose(catalog, samples, target_fpr, channels, required)
    report.unreadable_works = unreadable
    report.seed, report.excerpt_s = int(seed), float(excerpt_s)
    report.negative_sources = {"catalog leave-one-work-out": n_negatives - n_outside,
                               **({str(negatives_dir): n_outside} if n_outside else {})}
    report.synthetic_catalog = synthetic
    if synthetic:
        report.warnings.append(
            "the catalog's works are musicops synthetic clips: negatives drawn from them are not real music, "
            "so the stated FPR says nothing about real originals; calibrate a catalog of real works, or add "
            "--negatives DIR with known-original music like the catalog's")
    if outside and len(outside) < 10:
        report.warnings.append(f"only {len(outside)} files under {negatives_dir}: their excerpts are not independent")
    report.created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report.elapsed_s = round(time.perf_counter() - started, 2)
    if save:
        update_info(catalog, {"threshold": report.threshold, "fusion": report.fusion,
                              "calibration": report.to_dict()})
    return report


# --- the choice --------------------------------------------------------------------------------------

def _best(sample: _Sample, fusion: dict[str, Any]) -> tuple[float, int | None]:
    """The sample's fused score over the works it may match, and the work that gives it."""
    allowed = sample.allowed()
    if not allowed.any():
        return -math.inf, None
    fused = np.full(sample.work_ids.shape, -np.inf)
    for channel, params in fusion.items():
        if params:
            z = (sample.scores[channel] - params["loc"]) / params["scale"]
            fused = np.maximum(fused, np.where(np.isnan(z), -np.inf, z))
    fused = np.where(allowed, fused, -np.inf)
    i = int(np.argmax(fused))
    return float(fused[i]), int(sample.work_ids[i])


def _channel_best(sample: _Sample, channel: str) -> float:
    """A negative's best raw score on one channel (0 when the channel found nothing)."""
    values = np.where(sample.allowed(), sample.scores[channel], np.nan)
    return float(np.nanmax(values)) if np.isfinite(values).any() else 0.0


def _channel_source(sample: _Sample, channel: str) -> float:
    """A positive's raw score for its own work on one channel (0 when not found)."""
    hit = np.flatnonzero(sample.work_ids == sample.source_work)
    if hit.size == 0 or not np.isfinite(sample.scores[channel][hit[0]]):
        return 0.0
    return float(sample.scores[channel][hit[0]])


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


def clopper_pearson_upper(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound on a rate from k events in n trials (exact, beta quantile)."""
    from scipy.stats import beta

    if n <= 0:
        return 1.0
    return 1.0 if k >= n else float(beta.ppf(confidence, k + 1, n - k))


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(positive > negative) + half the ties (Mann-Whitney)."""
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def _choose(catalog: CatalogVersion, samples: list[_Sample], target_fpr: float, channels: tuple[str, ...],
            required: int) -> CalibrationReport:
    fit_neg = [s for s in samples if not s.positive and s.fold == 0]
    fit_pos = [s for s in samples if s.positive and s.fold == 0]
    if len(fit_neg) < required:
        raise CalibrationError(f"only {len(fit_neg)} negatives fell in the fit fold; need {required}: "
                               "raise --n-negatives")
    null: dict[str, dict[str, float]] = {}
    reports: list[ChannelReport] = []
    for channel in gate.CHANNELS:
        if channel not in channels:
            reason = "catalog has no embeddings" if channel == "embedding" else "not available"
            reports.append(ChannelReport(channel, None, None, False, reason))
            continue
        neg = np.array([_channel_best(s, channel) for s in fit_neg])
        pos = np.array([_channel_source(s, channel) for s in fit_pos])
        if not np.isfinite(neg).all() or not (pos > 0).any():
            reports.append(ChannelReport(channel, None, None, False, "no scores"))
            continue
        auc = roc_auc(pos, neg)
        tpr = float(np.mean(pos >= threshold_for(neg, target_fpr)))
        if auc < MIN_CHANNEL_AUC:
            reports.append(ChannelReport(channel, round(auc, 4), round(tpr, 4), False,
                                         f"does not separate copies from originals (AUC {auc:.3f} < "
                                         f"{MIN_CHANNEL_AUC}): left out of the fusion"))
            continue
        null[channel] = _null_scale(neg, SCALE_FLOOR[channel])
        reports.append(ChannelReport(channel, round(auc, 4), round(tpr, 4), True, "separates"))
    if not null:
        raise CalibrationError(f"catalog {catalog.ref}: no channel separates copies from originals; "
                               "nothing honest to calibrate")

    best: tuple[float, int, tuple[str, ...], float] | None = None
    choice: dict[str, float] = {}
    for size in range(1, len(null) + 1):
        for subset in itertools.combinations(list(null), size):
            fusion = {c: (null[c] if c in subset else None) for c in gate.CHANNELS}
            threshold = threshold_for(np.array([_best(s, fusion)[0] for s in fit_neg]), target_fpr)
            mean_tpr = float(np.mean([np.mean([float(_best(s, fusion)[0] >= threshold) for s in fit_pos
                                               if s.transform == name] or [0.0]) for name in TRANSFORMS]))
            choice["+".join(subset)] = round(mean_tpr, 4)
            # Every channel added brings its own tail into the max: a larger set must earn its place by
            # CHANNEL_GAIN of mean TPR (measured: an extra fingerprint channel "won" by a hair on one
            # fold and tripled the held-out FPR).
            if best is None or mean_tpr > best[0] + (CHANNEL_GAIN if size > best[1] else 1e-12):
                best = (mean_tpr, size, subset, threshold)
    assert best is not None
    _, _, subset, threshold = best
    used = set(subset)
    reports = [r if not r.used or r.channel in used else
               ChannelReport(r.channel, r.auc, r.tpr_at_target, False,
                             "separates, but adds no TPR over the channels used") for r in reports]
    fusion = {c: (null[c] if c in used else None) for c in gate.CHANNELS}
    return _evaluate(catalog, samples, fusion, list(subset), target_fpr, threshold, reports, choice, required)


def _evaluate(catalog: CatalogVersion, samples: list[_Sample], fusion: dict[str, Any], channels: list[str],
              target_fpr: float, threshold: float, reports: list[ChannelReport], choice: dict[str, float],
              required: int) -> CalibrationReport:
    scored = [(s, *_best(s, fusion)) for s in samples]
    held = [(s, score, work) for s, score, work in scored if s.fold == 1]
    neg = np.array([score for s, score, _ in held if not s.positive])
    fit_neg = np.array([score for s, score, _ in scored if s.fold == 0 and not s.positive])
    rows = []
    for name in TRANSFORMS:
        pos = [(score, work == s.source_work) for s, score, work in held if s.positive and s.transform == name]
        negs = [score for s, score, _ in held if not s.positive and s.transform == name]
        rows.append(TransformResult(
            transform=name, n_positive=len(pos),
            tpr=round(float(np.mean([p >= threshold for p, _ in pos])) if pos else 0.0, 4),
            top1_correct=round(float(np.mean([p >= threshold and ok for p, ok in pos])) if pos else 0.0, 4),
            n_negative=len(negs),
            fpr=round(float(np.mean([n >= threshold for n in negs])) if negs else 0.0, 4),
            median_positive_score=round(float(np.median([p for p, _ in pos])) if pos else 0.0, 4)))
    positives = [score >= threshold for s, score, _ in held if s.positive]
    false_positives = int((neg >= threshold).sum())
    return CalibrationReport(
        catalog=catalog.ref, target_fpr=target_fpr, threshold=threshold, channels=channels, fusion=fusion,
        n_negatives=int(neg.size), fpr=round(false_positives / max(1, neg.size), 4),
        fpr_upper_bound=round(clopper_pearson_upper(false_positives, int(neg.size)), 4), rows=rows, seed=0,
        excerpt_s=0.0, n_fit_negatives=int(fit_neg.size),
        fit_fpr=round(float(np.mean(fit_neg >= threshold)) if fit_neg.size else 0.0, 4), min_negatives=required,
        channel_report=reports, channel_choice=choice,
        tpr=round(float(np.mean(positives)) if positives else 0.0, 4))


# --- audio: sources, negatives, transforms ---------------------------------------------------------

def _read_negatives(directory: str | Path, rate: int) -> list[tuple[str, np.ndarray]]:
    """Known-original music from a folder (mono at `rate`); synthetic musicops clips are refused."""
    from musicops.audio.convert import resample
    from musicops.audio.io import AUDIO_EXTENSIONS, AudioError, read_audio

    root = Path(directory)
    if not root.is_dir():
        raise CalibrationError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    synthetic = [p for p in files if _is_synthetic(p)]
    if files and len(synthetic) == len(files):
        raise CalibrationError(f"{root}: every file is a musicops synthetic clip; synthetic music is not a null for "
                               "real originals (their scores are far lower), give known-original music")
    out = []
    for path in files:
        if path in synthetic:
            continue
        try:
            audio = read_audio(path)
        except (OSError, AudioError):
            continue
        out.append((str(path), resample(audio.mono().astype(np.float64), audio.sample_rate, rate)))
    if not out:
        raise CalibrationError(f"{root}: no readable audio files for negatives")
    return out


def _is_synthetic(path: Path) -> bool:
    """True when the file's folder says musicops synthesized it (datasets synth's metadata.jsonl)."""
    from musicops.datasets.synth import SYNTH_GENERATOR

    meta = path.parent / "metadata.jsonl"
    if not meta.is_file():
        return False
    try:
        for line in meta.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("file_name") == path.name:
                return row.get("generator") == SYNTH_GENERATOR
    except (OSError, ValueError):
        return False
    return False


def _synthetic_share(catalog: CatalogVersion) -> float:
    flags = [_is_synthetic(Path(w.path)) for w in catalog.works]
    return float(np.mean(flags)) if flags else 0.0


# --- audio: sources, negatives, transforms ---------------------------------------------------------

def _load_work(work: Any, rate: int) -> np.ndarray | None:
    """A work's mono audio at `rate`, from its recorded path; None if moved, changed or unreadable."""
    from musicops.audio.convert import resample
    from musicops.audio.io import AudioError, read_audio
    from musicops.hashing import file_sha256

    try:
        if file_sha256(work.path) != work.sha256:
            return None
        audio = read_audio(work.path)
    except (OSError, AudioError):
        return None
    return resample(audio.mono().astype(np.float64), audio.sample_rate, rate)


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
        db = rng.uniform(*GAIN_DB) * (1 if rng.random() < 0.5 else -1)
        y = x * 10.0 ** (db / 20.0)
        return y / max(1.0, float(np.max(np.abs(y))) / 0.99)  # a louder copy is limited, never clipped

    def noise(x, rng, other):
        power = float(np.mean(x ** 2)) or 1e-8
        return x + rng.standard_normal(x.shape[0]) * math.sqrt(power / 10.0 ** (NOISE_SNR_DB / 10.0))

    def reencode(x, rng, other):  # MP3 or Vorbis, alternately
        from musicops.audio.io import read_audio, write_audio

        path = scratch / ("reencode.mp3" if rng.random() < 0.5 else "reencode.ogg")
        write_audio(path, np.clip(x, -1.0, 1.0), rate)
        return read_audio(path).mono().astype(np.float64)

    def tempo(x, rng, other):  # faster or slower, pitch kept
        change = rng.uniform(*TEMPO_CHANGES) * (1 if rng.random() < 0.5 else -1)
        return time_stretch(x, 1.0 / (1.0 + change))

    def pitch(x, rng, other):  # transposed, tempo kept
        steps = int(rng.choice(PITCH_STEPS)) * (1 if rng.random() < 0.5 else -1)
        ratio = 2.0 ** (steps / 12.0)
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
