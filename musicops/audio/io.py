"""Reading and writing audio with clear errors: corrupt, empty, NaN or mislabelled files never pass.

soundfile (libsndfile) does the work; torchaudio is avoided on purpose (PyPI's build needs CUDA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicops.errors import MusicopsError

# Container formats soundfile reports, by the file extensions that may hold them.
EXTENSION_FORMATS = {
    ".wav": {"WAV", "WAVEX", "RF64"},
    ".flac": {"FLAC"},
    ".ogg": {"OGG"},
    ".aiff": {"AIFF"},
    ".aif": {"AIFF"},
    ".mp3": {"MP3"},  # libsndfile >= 1.1 (soundfile's bundled build) decodes MPEG layer III
}
AUDIO_EXTENSIONS = tuple(EXTENSION_FORMATS)


class AudioError(MusicopsError, ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:
        """Rebuild from (path, problem): the default pickles only the message, and a worker's
        AudioError that cannot be unpickled breaks the whole process pool."""
        return (type(self), (self.path, self.problem))


@dataclass(frozen=True)
class FileProblem:
    """A file that cannot enter a dataset or a catalog, and why (shown to the user verbatim)."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Audio:
    """Decoded audio as float32, shape (frames, channels)."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / float(self.sample_rate)

    def mono(self) -> np.ndarray:
        from musicops.audio.convert import to_mono

        return to_mono(self.samples)


def read_audio(path: str | os.PathLike[str], *, max_bytes: int = 512 * 1024 * 1024) -> Audio:
    """Decode a file, refusing empty, oversized, corrupt, mislabelled, silent-length or non-finite audio."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "not a file")
    return _decode(str(path), path, path.stat().st_size, path.suffix, max_bytes)


def decode_audio(data: bytes, name: str | os.PathLike[str], fmt: str, *,
                 max_bytes: int = 512 * 1024 * 1024) -> Audio:
    """Decode bytes (an asset, an upload) with exactly `read_audio`'s checks; `fmt` ("wav", "flac",
    ...) plays the file extension's part and `name` is what errors call it."""
    import io

    return _decode(io.BytesIO(data), name, len(data), f".{fmt}", max_bytes)


def _decode(source: Any, name: str | os.PathLike[str], size: int, suffix: str, max_bytes: int) -> Audio:
    import soundfile as sf

    if size == 0:
        raise AudioError(name, "empty file (0 bytes)")
    if size > max_bytes:
        raise AudioError(name, f"file too large ({size} bytes > limit {max_bytes})")
    try:
        info = sf.info(source)
    except Exception as exc:  # libsndfile raises several types; all mean "not decodable"
        raise AudioError(name, f"not a readable audio file ({_short(exc)})") from exc
    expected = EXTENSION_FORMATS.get(suffix.lower())
    if expected is not None and info.format not in expected:
        raise AudioError(name, f"mislabelled: extension {suffix} but content is {info.format}")
    if info.frames <= 0:
        raise AudioError(name, "no audio frames")
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(name, f"corrupt audio data ({_short(exc)})") from exc
    if data.shape[0] == 0:
        raise AudioError(name, "no audio frames")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(name, f"contains {bad} NaN/Inf samples")
    return Audio(samples=data, sample_rate=int(rate))


def write_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int, *,
                subtype: str = "PCM_16") -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a half-written file behind."""
    import soundfile as sf

    from musicops.store.files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(samples, dtype=np.float32)
    if not np.isfinite(data).all():
        raise AudioError(path, "refusing to write NaN/Inf samples")
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(path, f"unsupported output extension {path.suffix!r}")
    with atomic_path(path) as tmp:
        sf.write(tmp, data, sample_rate, format=fmt, subtype={"OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}.get(fmt, subtype))
    return path


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__
