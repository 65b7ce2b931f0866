"""The copyright gate's real-music evaluation set, built from public-domain scores at run time.

Layout written under `out/` (nothing here is committed: the audio is rendered on the machine):
- `catalog/`: the reference works (`STYLE-NNN-SCORE.wav`), what `musicops catalog add` is given;
- `queries/`: copies of catalog excerpts under one transform each, and excerpts of works that are
  NOT in the catalog (negatives), named `qNNNN.EXT` so a name never gives the answer away;
- `truth.json`: per query, whether it is a copy, its transform, the catalog file and the work time
  the excerpt starts at, and its split (`fit` / `eval`, by work, so no work is on both sides).

Copies: time shift (sample-exact random start), gain +-6..12 dB, noise at 15 dB SNR, MP3 and Vorbis
re-encode, tempo +-3 % / +-6 % with pitch kept and pitch +-1 / +-2 semitones with tempo kept (both
*re-rendered from the score*, i.e. independent of any DSP the gate's calibration uses), and mixed
6 dB under another piece. Negatives: half are pieces of a catalog work's style played with that
work's instruments (the hard case), half the same styles with any of the style's ensembles; they
get the same processing (gain, noise, re-encode, mix) so "processed" never means "copy".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicops.datasets import scores

COPY_TRANSFORMS = ("shift", "gain", "noise", "mp3", "vorbis", "tempo", "pitch", "mix")
NEGATIVE_PROCESSING = ("none", "gain", "noise", "mp3", "vorbis", "mix")
TEMPO_FACTORS = (1.03, 0.97, 1.06, 0.94)
PITCH_STEPS = (1, -1, 2, -2)
NOISE_SNR_DB = 15.0
MIX_UNDER_DB = 6.0
# How the catalog is spread over styles (fractions of n_catalog, in this order).
STYLE_SHARES = {"chorale": 0.25, "renaissance": 0.175, "madrigal": 0.15, "trecento": 0.125,
                "quartet": 0.125, "fiddle": 0.175}


@dataclass(frozen=True)
class SetSpec:
    n_catalog: int = 40
    n_negative_works: int = 64
    excerpts_per_negative: int = 5
    excerpt_s: float = 10.0
    work_max_s: float = 75.0
    min_work_s: float = 20.0
    seed: int = 0

    @classmethod
    def small(cls, seed: int = 0) -> SetSpec:
        """The slice `make test` renders (about a minute)."""
        return cls(n_catalog=8, n_negative_works=12, excerpts_per_negative=3, work_max_s=40.0, seed=seed)


@dataclass
class Rendered:
    style: str
    score: scores.ParsedScore
    ensemble: str
    programs: tuple[int, ...]
    qpm: float
    audio: np.ndarray  # (frames, 2) at scores.SAMPLE_RATE
    file: str = ""


@dataclass
class Query:
    file: str
    kind: str  # "copy" | "negative"
    transform: str
    param: float | None
    work: str | None  # catalog file name for copies
    offset_s: float | None  # work time where the excerpt starts (copies)
    style: str
    same_instruments: bool
    split: str
    source: str  # corpus path the excerpt comes from


@dataclass
class RealSet:
    root: Path
    spec: SetSpec
    queries: list[Query] = field(default_factory=list)
    catalog: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def queries_dir(self) -> Path:
        return self.root / "queries"

    def save(self) -> None:
        data = {"spec": asdict(self.spec), "catalog": self.catalog, "skipped": self.skipped,
                "queries": [asdict(q) for q in self.queries]}
        (self.root / "truth.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, root: str | Path) -> RealSet:
        root = Path(root)
        data = json.loads((root / "truth.json").read_text(encoding="utf-8"))
        return cls(root=root, spec=SetSpec(**data["spec"]), queries=[Query(**q) for q in data["queries"]],
                   catalog=data["catalog"], skipped=data["skipped"])


def build(out: str | Path, spec: SetSpec | None = None, *, progress: Any = None) -> RealSet:
    """Render the set into `out` (reused as is when `out/truth.json` exists with the same spec)."""
    spec = spec or SetSpec()
    root = Path(out)
    if (root / "truth.json").is_file():
        existing = RealSet.load(root)
        if existing.spec == spec:
            return existing
        raise ValueError(f"{root} holds a set built with another spec ({existing.spec}); use an empty folder")
    scores.check_tools()
    say = progress or (lambda message: None)
    rng = np.random.default_rng([spec.seed, 31])
    result = RealSet(root=root, spec=spec)
    result.catalog_dir.mkdir(parents=True, exist_ok=True)
    result.queries_dir.mkdir(parents=True, exist_ok=True)

    pools = {name: _shuffled(scores.corpus_paths(style), rng) for name, style in scores.STYLES.items()}
    seen = _Seen()
    quota = _catalog_quota(spec.n_catalog)
    catalog: list[Rendered] = []
    for style_name, count in quota.items():
        style = scores.STYLES[style_name]
        while sum(r.style == style_name for r in catalog) < count:
            rendered = _next_render(style, pools[style_name], seen, rng, spec, result.skipped)
            if rendered is None:
                break
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(rendered.score.corpus_path).stem)
            rendered.file = f"{style_name}-{len(catalog):03d}-{stem}.wav"
            _write(result.catalog_dir / rendered.file, rendered.audio)
            catalog.append(rendered)
            say(f"catalog {len(catalog)}/{spec.n_catalog}: {rendered.file}")
    result.catalog = [{"file": r.file, "style": r.style, "source": r.score.corpus_path, "ensemble": r.ensemble,
                       "qpm": r.qpm, "duration_s": round(r.audio.shape[0] / scores.SAMPLE_RATE, 3)} for r in catalog]

    negatives: list[Rendered] = []
    styles_in_catalog = [r.style for r in catalog]
    for j in range(spec.n_negative_works):
        template = catalog[int(rng.integers(len(catalog)))]
        same = j % 2 == 0
        style = scores.STYLES[template.style if same else styles_in_catalog[int(rng.integers(len(catalog)))]]
        ensemble = (template.ensemble, template.programs) if same and style.name == template.style else None
        rendered = _next_render(style, pools[style.name], seen, rng, spec, result.skipped, ensemble=ensemble,
                                transpose=int(rng.integers(-2, 3)))
        if rendered is None:
            continue
        rendered.file = "same" if same else "other"
        negatives.append(rendered)
        say(f"negative works {len(negatives)}/{spec.n_negative_works}: {rendered.score.corpus_path}")

    sr = scores.SAMPLE_RATE
    n_excerpt = int(round(spec.excerpt_s * sr))
    counter = iter(range(1, 1_000_000))
    work_split = {r.file: ("fit" if i % 2 == 0 else "eval") for i, r in enumerate(_shuffled(catalog, rng))}
    for index, work in enumerate(catalog):
        for t, transform in enumerate(COPY_TRANSFORMS):
            background = negatives[int(rng.integers(len(negatives)))].audio
            variant = (index + t) % 4
            audio, param, offset = _copy(work, transform, variant, n_excerpt, background, rng)
            q = _save_query(result, next(counter), transform, audio, rng)
            result.queries.append(Query(q, "copy", transform, param, work.file, round(offset, 4), work.style,
                                        True, work_split[work.file], work.score.corpus_path))
        say(f"copies of {work.file}")
    for j, neg in enumerate(negatives):
        split = "fit" if j % 2 == 0 else "eval"
        for k in range(spec.excerpts_per_negative):
            processing = NEGATIVE_PROCESSING[(j + k) % len(NEGATIVE_PROCESSING)]
            x = _excerpt(neg.audio, n_excerpt, rng)[0]
            if processing == "mix":
                other = negatives[(j + 1 + int(rng.integers(len(negatives) - 1))) % len(negatives)].audio
                x = _mix_under(x, _excerpt(other, n_excerpt, rng)[0])
            q = _save_query(result, next(counter), processing, x, rng)
            result.queries.append(Query(q, "negative", processing, None, None, None, neg.style, neg.file == "same",
                                        split, neg.score.corpus_path))
    result.save()
    return result


# --- selection and rendering ------------------------------------------------------------------------

def _catalog_quota(n: int) -> dict[str, int]:
    raw = {k: v * n for k, v in STYLE_SHARES.items()}
    quota = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - quota[k], reverse=True)[: n - sum(quota.values())]:
        quota[k] += 1
    return quota


def _shuffled(items: list, rng: np.random.Generator) -> list:
    return [items[int(i)] for i in rng.permutation(len(items))]


class _Seen:
    """Tunes and work families already in the set (see `ParsedScore.melody_grams` and `.family`)."""

    def __init__(self) -> None:
        self.grams: list[frozenset[tuple[int, ...]]] = []
        self.families: set[str] = set()

    def known(self, score: scores.ParsedScore) -> bool:
        grams = score.melody_grams()
        return score.family in self.families or any(len(grams & other) >= 2 for other in self.grams)

    def add(self, score: scores.ParsedScore) -> None:
        self.grams.append(score.melody_grams())
        self.families.add(score.family)


def _next_render(style: scores.Style, pool: list[str], seen: _Seen, rng: np.random.Generator,
                 spec: SetSpec, skipped: list[str], *, ensemble: tuple[str, tuple[int, ...]] | None = None,
                 transpose: int = 0) -> Rendered | None:
    """Parse and render the next usable score of the pool (new tune, long enough); None when exhausted."""
    while pool:
        path = pool.pop()
        try:
            parsed = scores.parse_score(path)
        except scores.RenderError as exc:
            skipped.append(str(exc))
            continue
        if len(parsed.melody_grams()) < 4 or seen.known(parsed):
            continue
        name, programs = ensemble or style.ensembles[int(rng.integers(len(style.ensembles)))]
        qpm = float(rng.integers(style.qpm[0], style.qpm[1] + 1))
        try:
            audio = scores.render(parsed, programs, qpm, transpose=transpose, max_s=spec.work_max_s)
        except scores.RenderError as exc:
            skipped.append(str(exc))
            continue
        if audio.shape[0] < spec.min_work_s * scores.SAMPLE_RATE:
            continue
        seen.add(parsed)
        return Rendered(style.name, parsed, name, programs, qpm, audio)
    return None


def _excerpt(audio: np.ndarray, n: int, rng: np.random.Generator, *, limit: int | None = None) -> tuple[np.ndarray, int]:
    """n frames from a random sample-exact start (within the first `limit` frames); (excerpt, start)."""
    last = max(0, min(audio.shape[0], limit or audio.shape[0]) - n)
    start = int(rng.integers(0, last + 1))
    return audio[start:start + n].copy(), start


def _copy(work: Rendered, transform: str, variant: int, n: int, background: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, float | None, float]:
    """(audio, parameter, work time in seconds of the excerpt's start in the original render)."""
    sr = scores.SAMPLE_RATE
    if transform == "tempo":
        factor = TEMPO_FACTORS[variant]
        faster = scores.render(work.score, work.programs, work.qpm * factor, max_s=work.audio.shape[0] / sr / factor)
        x, start = _excerpt(faster, n, rng)
        return x, factor, start / sr * factor
    if transform == "pitch":
        steps = PITCH_STEPS[variant]
        shifted = scores.render(work.score, work.programs, work.qpm, transpose=steps, max_s=work.audio.shape[0] / sr)
        x, start = _excerpt(shifted, n, rng)
        return x, float(steps), start / sr
    x, start = _excerpt(work.audio, n, rng)
    param: float | None = None
    if transform == "gain":
        param = float(rng.choice([-1, 1]) * rng.uniform(6.0, 12.0))
        x = x * 10.0 ** (param / 20.0)
        x = x / max(1.0, float(np.abs(x).max()) / 0.99)
    elif transform == "noise":
        param = NOISE_SNR_DB
        power = float(np.mean(x ** 2)) or 1e-8
        x = x + rng.standard_normal(x.shape).astype(np.float32) * math.sqrt(power / 10 ** (NOISE_SNR_DB / 10))
    elif transform == "mix":
        param = -MIX_UNDER_DB
        x = _mix_under(x, _excerpt(background, n, rng)[0])
    return x, param, start / sr


def _mix_under(x: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`x` MIX_UNDER_DB below `other` (RMS), peak kept below full scale."""
    n = min(x.shape[0], other.shape[0])
    x, other = x[:n], other[:n]
    rms = lambda a: math.sqrt(float(np.mean(a ** 2)) or 1e-12)  # noqa: E731
    y = other + x * (rms(other) * 10 ** (-MIX_UNDER_DB / 20) / rms(x))
    return y / max(1.0, float(np.abs(y).max()) / 0.99)


def _save_query(result: RealSet, number: int, transform: str, audio: np.ndarray, rng: np.random.Generator) -> str:
    ext = {"mp3": ".mp3", "vorbis": ".ogg"}.get(transform, ".wav")
    name = f"q{number:04d}{ext}"
    _write(result.queries_dir / name, audio)
    return name


def _write(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    fmt, subtype = {".mp3": ("MP3", "MPEG_LAYER_III"), ".ogg": ("OGG", "VORBIS")}.get(path.suffix, ("WAV", "PCM_16"))
    sf.write(str(path), np.clip(audio, -1.0, 1.0), scores.SAMPLE_RATE, format=fmt, subtype=subtype)
