from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import soundfile as sf

from musicops.audio.io import read_audio
from musicops.audio.measure import integrated_loudness
from musicops.datasets.synth import synthesize


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _metadata(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_same_seed_gives_bit_identical_files(tmp_path: Path) -> None:
    first = synthesize(tmp_path / "a", n=3, seed=5, duration_s=1.0)
    second = synthesize(tmp_path / "b", n=3, seed=5, duration_s=1.0)
    assert [p.name for p in first] == [p.name for p in second]
    assert _digests(first) == _digests(second)
    meta_a, meta_b = (tmp_path / d / "metadata.jsonl" for d in ("a", "b"))
    assert meta_a.read_bytes() == meta_b.read_bytes()
    assert len(set(_digests(first))) == 3  # clips differ from each other


def test_other_seed_differs_and_clips_do_not_depend_on_n(tmp_path: Path) -> None:
    base = synthesize(tmp_path / "a", n=2, seed=5, duration_s=1.0)
    other = synthesize(tmp_path / "b", n=2, seed=6, duration_s=1.0)
    longer = synthesize(tmp_path / "c", n=3, seed=5, duration_s=1.0)
    assert set(_digests(base)).isdisjoint(_digests(other))
    assert _digests(longer)[:2] == _digests(base)


def test_format_captions_and_levels(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    paths = synthesize(tmp_path, n=4, seed=1, duration_s=1.5, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    records = _metadata(tmp_path)
    assert [r["file_name"] for r in records] == [p.name for p in paths]
    for path, record in zip(paths, records, strict=True):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (32000, 1, "WAV", "PCM_16")
        assert info.frames == 48000
        caption = record["caption"]
        assert record["key"] in caption and f"{record['tempo_bpm']} BPM" in caption
        assert caption.startswith(record["mood"])
        assert re.fullmatch(r"[A-G][#b]? (major|minor)", record["key"])
        assert ("drums" in record["instruments"]) == ("no drums" not in caption)
        audio = read_audio(path)
        assert audio.samples.max() < 0.9 and audio.samples.min() > -0.9
        loudness = integrated_loudness(audio.samples, audio.sample_rate)
        assert -24.0 < loudness < -16.0


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 1, "duration_s": 0.1}, {"n": 1, "sample_rate": 4000}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        synthesize(tmp_path, seed=0, **kwargs)
