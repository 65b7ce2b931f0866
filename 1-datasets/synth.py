"""A deterministic synthetic music dataset (numpy only) for tests, demos and smoke fine-tunes.

Real music cannot ship with the repository, but the pipelines still need captioned audio whose
content is known: each clip here is rendered from a random but seeded plan (key, tempo, chord
progression, melody, instruments, drum pattern), and its caption is written from that plan, so a
caption always says what is actually audible. Clip `i` depends only on `(seed, i)`, so the same
seed gives bit-identical files and `n=3` is a prefix of `n=5`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Diatonic progressions as scale degrees (0 = tonic), chosen to sound idiomatic in each mode.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (1, 4, 0, 0), (0, 3, 4, 3)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4), (0, 3, 6, 2)),
}
SYNTH_GENERATOR = "musicops-synth"
TARGET_LUFS = -18.0
PEAK_CEILING = 0.89  # linear; about -1 dBFS, leaving headroom for 16-bit rounding and resampling


@dataclass(frozen=True)
class Mood:
    """A mood fixes the plausible ranges of everything else, so captions stay self-consistent."""

    name: str
    style: str
    modes: tuple[str, ...]
    tempo: tuple[int, int]
    drums: float  # probability of a drum part
    lead: tuple[str, ...]  # candidate melodic instruments
    support: tuple[str, ...]  # candidate harmonic instruments


MOODS = (
    Mood("calm", "ambient piece", ("major", "minor"), (66, 88), 0.0, ("piano",), ("pad",)),
    Mood("dreamy", "ambient piece", ("major",), (70, 92), 0.3, ("piano", "synth lead"), ("pad",)),
    Mood("melancholic", "ballad", ("minor",), (64, 84), 0.4, ("piano",), ("pad", "piano")),
    Mood("upbeat", "pop groove", ("major",), (104, 128), 1.0, ("synth lead", "piano"), ("piano", "pad")),
    Mood("energetic", "electronic track", ("minor", "major"), (120, 140), 1.0, ("synth lead",), ("pad",)),
    Mood("relaxed", "lo-fi beat", ("major", "minor"), (76, 92), 1.0, ("piano",), ("pad", "piano")),
)
ADJECTIVES = {"piano": "piano", "synth lead": "bright synth lead", "bass": "deep bass", "pad": "soft pad"}


@dataclass(frozen=True)
class ClipPlan:
    """Everything a clip is made of; the caption and the metadata row are derived from it."""

    index: int
    mood: Mood
    root: int  # pitch class, 0 = C
    mode: str
    tempo_bpm: int
    progression: tuple[int, ...]
    lead: str
    support: str
    bass: bool
    drums: bool

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.root]} {self.mode}"

    @property
    def instruments(self) -> list[str]:
        names = [self.lead]
        if self.support != self.lead:
            names.append(self.support)
        if self.bass:
            names.append("bass")
        if self.drums:
            names.append("drums")
        return names

    @property
    def caption(self) -> str:
        parts = [ADJECTIVES.get(name, name) for name in self.instruments]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return (f"{self.mood.name} {self.mood.style} in {self.key} at {self.tempo_bpm} BPM "
                f"with {listed}{'' if self.drums else ', no drums'}")


def plan_clip(seed: int, index: int) -> ClipPlan:
    """Draw a clip's musical plan from a generator seeded by (seed, index) only."""
    rng = np.random.default_rng([seed, index, 0])
    mood = MOODS[int(rng.integers(len(MOODS)))]
    mode = str(rng.choice(mood.modes))
    tempo = int(rng.integers(mood.tempo[0], mood.tempo[1] + 1))
    progression = PROGRESSIONS[mode][int(rng.integers(len(PROGRESSIONS[mode])))]
    return ClipPlan(
        index=index,
        mood=mood,
        root=int(rng.integers(12)),
        mode=mode,
        tempo_bpm=tempo,
        progression=progression,
        lead=str(rng.choice(mood.lead)),
        support=str(rng.choice(mood.support)),
        bass=bool(mood.drums > 0.5 or rng.random() < 0.5),
        drums=bool(rng.random() < mood.drums),
    )


# --- instruments: each returns a float64 note of `n` samples at frequency `freq` ------------------

def _harmonics(freq: float, t: np.ndarray, sr: int, weights: Callable[[int], float], count: int,
               detune: float = 0.0) -> np.ndarray:
    """Additive synthesis below Nyquist, so saw/square timbres do not alias."""
    out = np.zeros_like(t)
    for k in range(1, count + 1):
        f = freq * k * (1.0 + detune)
        if f >= 0.45 * sr:
            break
        out += weights(k) * np.sin(2 * np.pi * f * t)
    return out


def _adsr(n: int, sr: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    env = np.full(n, sustain)
    a = min(n, max(1, int(attack * sr)))
    d = min(n - a, int(decay * sr))
    r = min(n, max(1, int(release * sr)))
    env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    if d > 0:
        env[a:a + d] = np.linspace(1.0, sustain, d, endpoint=False)
    env[n - r:] *= np.linspace(1.0, 0.0, r)
    return env


def _piano(freq: float, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    tone = _harmonics(freq, t, sr, lambda k: 1.0 / k**1.5, 8)
    decay = np.exp(-t * (2.5 + freq / 400.0))  # higher notes die faster, like a struck string
    return tone * decay * _adsr(n, sr, 0.004, 0.0, 1.0, 0.03)


def _lead(freq: float, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    vibrato = 1.0 + 0.004 * np.sin(2 * np.pi * 5.5 * t)
    phase_t = np.cumsum(vibrato) / sr
    tone = _harmonics(freq, phase_t, sr, lambda k: 1.0 / k, 12)  # saw-like
    return 0.6 * tone * _adsr(n, sr, 0.015, 0.1, 0.7, 0.05)


def _bass(freq: float, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    tone = _harmonics(freq, t, sr, lambda k: (1.0 / k) if k % 2 else 0.0, 7)  # square-ish
    return 0.9 * tone * _adsr(n, sr, 0.01, 0.15, 0.6, 0.04)


def _soft_saw(k: int) -> float:
    return 1.0 / k**1.3


def _pad(freq: float, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    tone = (_harmonics(freq, t, sr, _soft_saw, 6, -0.003)
            + _harmonics(freq, t, sr, _soft_saw, 6, 0.003))  # two detuned voices = slow chorus
    return 0.35 * tone * _adsr(n, sr, 0.35, 0.2, 0.8, 0.3)


VOICES: dict[str, Callable[[float, int, int], np.ndarray]] = {
    "piano": _piano, "synth lead": _lead, "bass": _bass, "pad": _pad,
}


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.35 * sr)) / sr
    freq = 50.0 + 100.0 * np.exp(-t * 30.0)  # the pitch drop is what makes a kick
    return np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t * 9.0)


def _snare(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.2 * sr)) / sr
    noise = rng.standard_normal(t.size)
    return (0.5 * noise * np.exp(-t * 22.0) + 0.4 * np.sin(2 * np.pi * 185.0 * t) * np.exp(-t * 30.0))


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.05 * sr)) / sr
    noise = rng.standard_normal(t.size + 1)
    bright = np.diff(noise)  # first difference = crude high-pass: keeps the hiss, drops the body
    return 0.25 * bright * np.exp(-t * 80.0)


def _midi_freq(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _add(track: np.ndarray, start: int, sound: np.ndarray, gain: float) -> None:
    if start >= track.size:
        return
    end = min(track.size, start + sound.size)
    track[start:end] += gain * sound[: end - start]


def render_clip(plan: ClipPlan, seed: int, duration_s: float, sample_rate: int) -> np.ndarray:
    """Render a plan to mono float32 at about -18 LUFS with the peak below PEAK_CEILING."""
    from musicops.audio.measure import integrated_loudness

    rng = np.random.default_rng([seed, plan.index, 1])
    sr = sample_rate
    n = int(round(duration_s * sr))
    mix = np.zeros(n)
    beat = 60.0 / plan.tempo_bpm
    bar = 4 * beat
    scale = SCALES[plan.mode]
    tonic = 48 + plan.root  # C3..B3

    def degree_pitch(degree: int, octave: int) -> int:
        return tonic + 12 * (octave + degree // 7) + scale[degree % 7]

    n_bars = int(np.ceil(duration_s / bar))
    support = VOICES[plan.support]
    for b in range(n_bars):
        chord_degree = plan.progression[b % len(plan.progression)]
        start = int(b * bar * sr)
        bar_samples = int(bar * sr)
        # Chords: a diatonic triad; piano comps on beats, a pad holds the whole bar.
        for offset in (0, 2, 4):
            freq = _midi_freq(degree_pitch(chord_degree + offset, 0))
            if plan.support == "piano":
                for hit in range(2):
                    _add(mix, start + int(hit * 2 * beat * sr), _piano(freq, int(2 * beat * sr), sr), 0.18)
            else:
                _add(mix, start, support(freq, bar_samples, sr), 0.22)
        if plan.bass:
            root_freq = _midi_freq(degree_pitch(chord_degree, -1))
            step = beat if plan.drums else 2 * beat
            for k in range(int(round(bar / step))):
                _add(mix, start + int(k * step * sr), _bass(root_freq, int(step * 0.9 * sr), sr), 0.35)

    # Melody: a random walk on the scale, rhythm in eighths and quarters, landing on chord tones.
    lead = VOICES[plan.lead]
    pos, degree = 0.0, int(rng.choice((0, 2, 4))) + 7
    while pos < duration_s:
        length = float(rng.choice((0.5, 0.5, 1.0, 1.0, 1.5, 2.0))) * beat
        if rng.random() < 0.12:  # a rest
            pos += length
            continue
        degree = int(np.clip(degree + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 3, 14))
        freq = _midi_freq(degree_pitch(degree, 1))
        _add(mix, int(pos * sr), lead(freq, int(length * sr), sr), 0.3)
        pos += length

    if plan.drums:
        four_on_floor = plan.mood.name == "energetic"
        kick, snare = _kick(sr), _snare(sr, rng)
        eighths = int(np.ceil(duration_s / (beat / 2)))
        for e in range(eighths):
            at = int(e * beat / 2 * sr)
            in_bar = e % 8
            pickup = in_bar == 6 and rng.random() < 0.3  # an occasional extra kick before the bar
            if in_bar % 2 == 0 and (four_on_floor or in_bar in (0, 4) or pickup):
                _add(mix, at, kick, 0.8)
            if in_bar in (2, 6):
                _add(mix, at, snare, 0.45)
            _add(mix, at, _hat(sr, rng), 0.5 if in_bar % 2 == 0 else 0.3)

    fade = min(n // 4, int(0.02 * sr))
    if fade:
        mix[:fade] *= np.linspace(0.0, 1.0, fade)
        mix[-fade:] *= np.linspace(1.0, 0.0, fade)
    loudness = integrated_loudness(mix, sr)
    if np.isfinite(loudness):
        mix *= 10.0 ** ((TARGET_LUFS - loudness) / 20.0)
    peak = float(np.max(np.abs(mix)))
    if peak > PEAK_CEILING:  # peak safety wins over the loudness target
        mix *= PEAK_CEILING / peak
    return mix.astype(np.float32)


def synthesize(out_dir: str | os.PathLike[str], n: int, seed: int, duration_s: float = 4.0,
               sample_rate: int = 32000, *,
               progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write `n` captioned clips plus `metadata.jsonl` (Hugging Face audiofolder layout) to `out_dir`.

    `progress(done, total)` is called after each clip, so a CLI can draw a bar without the library
    depending on one.
    """
    from musicops.audio.io import write_audio

    if n < 1:
        raise ValueError(f"n must be at least 1 (got {n})")
    if not 0.5 <= duration_s <= 600:
        raise ValueError(f"duration_s must be between 0.5 and 600 seconds (got {duration_s})")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz (got {sample_rate})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    paths: list[Path] = []
    records: list[dict] = []
    for i in range(n):
        plan = plan_clip(seed, i)
        audio = render_clip(plan, seed, duration_s, sample_rate)
        path = write_audio(out / f"clip_{i:0{width}d}.wav", audio, sample_rate)
        paths.append(path)
        records.append({
            "file_name": path.name,
            "caption": plan.caption,
            "key": plan.key,
            "tempo_bpm": plan.tempo_bpm,
            "instruments": plan.instruments,
            "mood": plan.mood.name,
            "generator": SYNTH_GENERATOR,  # lets the copyright calibration refuse synthetic "negatives"
        })
        if progress is not None:
            progress(i + 1, n)
    _write_jsonl(out / "metadata.jsonl", records)
    return paths


def _write_jsonl(path: Path, records: list[dict]) -> None:
    """Atomic, so a reader never sees captions for only half the clips."""
    from musicops.store.files import atomic_write

    atomic_write(path, "".join(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n" for record in records))
