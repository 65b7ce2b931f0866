"""Real music made legally at test time: public-domain scores rendered through a General MIDI soundfont.

No third-party audio ships with musicops, yet a copyright gate has to be measured on music, not on
synthetic tones. music21's corpus holds public-domain scores (Bach chorales, Palestrina, Monteverdi,
trecento pieces, Haydn/Mozart quartets, Irish fiddle tunes); each is turned into a MIDI file here
(note events only, one channel and GM program per part, our own tempo) and rendered by FluidSynth
(Debian `fluidsynth` + `fluid-soundfont-gm`). Hand-rolled MIDI instead of music21's own writer
because the latter expands repeats and fails on many corpus files ("badly formed repeats").

`musicops.evaluation.catalog.realset` builds the copyright-gate evaluation set from these renders.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicops.errors import MusicopsError

SOUNDFONT_CANDIDATES = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
                        "/usr/share/soundfonts/default.sf2")
SAMPLE_RATE = 32_000
TICKS_PER_BEAT = 480


class RenderError(MusicopsError, RuntimeError):
    """A score that cannot be parsed or rendered (the message names it and why)."""


@dataclass(frozen=True)
class Style:
    """A corpus collection and how its pieces are played: ensembles (GM programs per part), tempo range."""

    name: str
    collections: tuple[str, ...]  # corpus sub-folders
    include: str  # substring a corpus path must contain (e.g. one movement type per mass)
    ensembles: tuple[tuple[str, tuple[int, ...]], ...]
    qpm: tuple[int, int]


STYLES: dict[str, Style] = {s.name: s for s in (
    Style("chorale", ("bach",), "bwv", (
        ("organ", (19, 19, 19, 19)), ("strings", (40, 40, 41, 42)), ("choir", (52, 52, 52, 52)),
        ("brass", (56, 60, 57, 58))), (62, 84)),
    Style("renaissance", ("palestrina",), "Agnus", (
        ("winds", (74, 73, 71, 70, 70, 71)), ("choir", (52, 52, 52, 52, 52, 52)),
        ("viols", (40, 41, 41, 42, 42, 43))), (110, 150)),
    Style("madrigal", ("monteverdi",), ".mxl", (
        ("choir", (52, 53, 52, 52, 52)), ("strings", (40, 40, 41, 42, 42)),
        ("winds", (73, 68, 71, 70, 70))), (96, 132)),
    Style("trecento", ("trecento",), ".xml", (
        ("recorders", (74, 74, 73, 71)), ("lutes", (24, 25, 24, 32)), ("harpsichord", (6, 6, 6, 6))),
        (100, 140)),
    Style("quartet", ("haydn", "mozart"), ".mxl", (
        ("string quartet", (40, 40, 41, 42)), ("piano", (0, 0, 0, 0)), ("wind quartet", (73, 68, 71, 70))),
        (80, 126)),
    Style("fiddle", ("ryansMammoth",), ".abc", (
        ("fiddle", (110,)), ("violin", (40,)), ("flute", (73,)), ("accordion", (21,))), (96, 132)),
)}


@dataclass(frozen=True)
class Note:
    onset_ql: float
    duration_ql: float
    midi: int
    part: int


@dataclass(frozen=True)
class ParsedScore:
    corpus_path: str  # relative to music21's corpus folder
    notes: tuple[Note, ...]
    n_parts: int

    def melody_grams(self, n: int = 40, k: int = 6) -> frozenset[tuple[int, ...]]:
        """k-interval fragments of the top part's first `n` intervals. Bach harmonised many chorale
        melodies several times (with different pickups and ornaments), so two scores sharing two or
        more fragments are the same tune in any key; a set keeps only one of them."""
        top = sorted((x for x in self.notes if x.part == 0), key=lambda x: (x.onset_ql, -x.midi))
        pitches, last = [], None
        for x in top:
            if x.onset_ql != last:
                pitches.append(x.midi)
                last = x.onset_ql
        intervals = tuple(int(b - a) for a, b in zip(pitches[:n], pitches[1:n + 1], strict=False))
        return frozenset(intervals[i:i + k] for i in range(max(0, len(intervals) - k + 1)))

    @property
    def family(self) -> str:
        """Movements of one work share material (Palestrina's Agnus I and II of mass 4): one per set."""
        stem = Path(self.corpus_path).stem
        match = re.fullmatch(r"Agnus(?:_[IV]+)?_?(\d+)", stem)
        return f"{Path(self.corpus_path).parent}/mass-{match.group(1)}" if match else self.corpus_path


def find_soundfont() -> Path:
    """The General MIDI soundfont FluidSynth renders with (MUSICOPS_SOUNDFONT overrides)."""
    from musicops.config import get_settings

    configured = get_settings().soundfont
    candidates = [str(configured)] if configured else []
    for candidate in [*candidates, *SOUNDFONT_CANDIDATES]:
        if Path(candidate).is_file():
            return Path(candidate)
    raise RenderError("no General MIDI soundfont: install Debian's fluid-soundfont-gm or set MUSICOPS_SOUNDFONT")


def check_tools() -> None:
    """Raise RenderError naming what is missing (fluidsynth, a soundfont, music21, mido)."""
    if shutil.which("fluidsynth") is None:
        raise RenderError("fluidsynth not found: install Debian's fluidsynth package")
    find_soundfont()
    try:
        import mido  # noqa: F401
        import music21  # noqa: F401
    except ImportError as exc:
        raise RenderError(f"{exc.name} missing: pip install -e '.[realmusic]'") from exc


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def corpus_paths(style: Style) -> list[str]:
    """The style's corpus files (relative paths, sorted: the same list on every machine)."""
    from music21 import corpus

    root = corpus_root()
    out = []
    for path in corpus.getCorePaths():
        rel = Path(path).relative_to(root).as_posix()
        if rel.split("/")[0] in style.collections and style.include in rel:
            out.append(rel)
    return sorted(out)


def parse_score(rel_path: str) -> ParsedScore:
    """Note events (quarter-length onsets, MIDI pitches) per part; repeats are not expanded."""
    from music21 import converter

    try:
        score = converter.parse(str(corpus_root() / rel_path))
    except Exception as exc:  # music21 raises many types for malformed corpus files
        raise RenderError(f"{rel_path}: cannot parse ({type(exc).__name__}: {exc})") from exc
    if not hasattr(score, "parts") or hasattr(score, "scores"):  # an Opus (several tunes) or a bare stream
        raise RenderError(f"{rel_path}: not a single score")
    notes: list[Note] = []
    for index, part in enumerate(list(score.parts)[:15]):  # 15 melodic MIDI channels (9 is drums)
        for element in part.flatten().notes:
            duration = float(element.duration.quarterLength)
            if duration <= 0:  # grace notes
                continue
            pitches = element.pitches if element.isChord else [element.pitch]
            for pitch in pitches:
                notes.append(Note(float(element.offset), duration, int(pitch.midi), index))
    if not notes:
        raise RenderError(f"{rel_path}: no notes")
    return ParsedScore(rel_path, tuple(sorted(notes, key=lambda n: (n.onset_ql, n.part, n.midi))),
                       1 + max(n.part for n in notes))


def write_midi(score: ParsedScore, path: Path, programs: tuple[int, ...], qpm: float, *,
               transpose: int = 0, max_s: float | None = None, velocity: int = 88) -> None:
    """One track and channel per part, GM program `programs[part % len]`, tempo `qpm`."""
    import mido

    midi = mido.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=int(round(60_000_000 / qpm)), time=0))
    midi.tracks.append(meta)
    limit_ql = None if max_s is None else max_s * qpm / 60.0
    for part in range(score.n_parts):
        channel = part if part < 9 else part + 1
        events: list[tuple[int, int, int]] = []  # (tick, 0 = off / 1 = on, pitch)
        for note in score.notes:
            if note.part != part or (limit_ql is not None and note.onset_ql >= limit_ql):
                continue
            pitch = note.midi + transpose
            if not 0 <= pitch <= 127:
                continue
            start = int(round(note.onset_ql * TICKS_PER_BEAT))
            end = max(start + 1, int(round((note.onset_ql + note.duration_ql) * TICKS_PER_BEAT)) - 2)
            events += [(start, 1, pitch), (end, 0, pitch)]
        track = mido.MidiTrack()
        track.append(mido.Message("program_change", channel=channel, program=programs[part % len(programs)], time=0))
        now = 0
        for tick, on, pitch in sorted(events):  # offs before ons at the same tick: re-struck notes sound
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, channel=channel, note=pitch, velocity=velocity if on else 0,
                                      time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(str(path))


def render(score: ParsedScore, programs: tuple[int, ...], qpm: float, *, transpose: int = 0,
           max_s: float | None = None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """FluidSynth render, (frames, 2) float32, cut to `max_s`; silence at the start is kept as played."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="musicops-render-") as scratch:
        mid, wav = Path(scratch) / "score.mid", Path(scratch) / "score.wav"
        write_midi(score, mid, programs, qpm, transpose=transpose, max_s=max_s)
        cmd = ["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(sample_rate), "-F", str(wav),
               str(find_soundfont()), str(mid)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not wav.is_file():
            raise RenderError(f"{score.corpus_path}: fluidsynth failed ({result.stderr.strip()[-300:]})")
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RenderError(f"{score.corpus_path}: fluidsynth wrote {rate} Hz, asked for {sample_rate}")
    if max_s is not None:
        audio = audio[: int(round(max_s * sample_rate))]
    peak = float(np.abs(audio).max(initial=0.0))
    if peak <= 0.0:
        raise RenderError(f"{score.corpus_path}: rendered silence")
    return (audio * (0.5 / peak)).astype(np.float32)  # every render at the same peak: -6 dBFS
