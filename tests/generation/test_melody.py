"""MusicGen-melody through the batch machinery: a prompts-file `melody` field and `--melody`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicops.config import Settings
from musicops.generation.batch import run_batch
from musicops.generation.planning import BatchOptions
from musicops.generation.prompts import PromptsFileError, read_prompts

pytestmark = pytest.mark.slow  # tiny melody-model generations and one CLI subprocess


def _tone(path: Path, hz: float, seconds: float = 2.0, rate: int = 32000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return path


def test_the_melody_conditions_the_asset_and_joins_its_key(tmp_path: Path) -> None:
    settings = Settings.from_values(home=tmp_path / "home").ensure()
    a = _tone(tmp_path / "a.wav", 220.0)
    _tone(tmp_path / "b.wav", 330.0)
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "bright marimba", "duration_s": 0.5, "seed": 1, "melody": name} for name in ("a.wav", "b.wav")]
    lines.append({"prompt": "bright marimba", "duration_s": 0.5, "seed": 1})
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = run_batch(prompts, "musicgen-melody-tiny", BatchOptions(log_to_mlflow=False), settings)
    with_a, with_b, without = (o.record for o in result.outcomes)
    assert len({with_a.asset_id, with_b.asset_id, without.asset_id}) == 3
    assert with_a.params["melody_sha256"] != with_b.params["melody_sha256"] and "melody_sha256" not in without.params
    assert with_a.sha256 != with_b.sha256  # different melodies, different audio
    again = run_batch(prompts, "musicgen-melody-tiny", BatchOptions(log_to_mlflow=False), settings)
    assert all(o.cache_hit for o in again.outcomes)
    _tone(a, 440.0)  # the file changed: a new key, so a new asset, never the old cache entry
    changed = run_batch(prompts, "musicgen-melody-tiny", BatchOptions(log_to_mlflow=False), settings)
    assert not changed.outcomes[0].cache_hit and changed.outcomes[0].record.asset_id != with_a.asset_id


def test_melody_lines_are_checked_and_refused_by_other_models(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    (tmp_path / "empty.wav").write_bytes(b"")
    bad.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "x", "duration_s": 1, "melody": "missing.wav"},
        {"prompt": "x", "duration_s": 1, "melody": "empty.wav"},
        {"prompt": "x", "duration_s": 1, "melody": 3},
    ]) + "\n")
    with pytest.raises(PromptsFileError) as caught:
        read_prompts(bad)
    assert [e.line_no for e in caught.value.errors] == [1, 2, 3]
    assert "not found" in str(caught.value.errors[0])
    good = tmp_path / "good.jsonl"
    _tone(tmp_path / "m.wav", 220.0)
    good.write_text(json.dumps({"prompt": "x", "duration_s": 0.5, "melody": "m.wav"}) + "\n")
    settings = Settings.from_values(home=tmp_path / "home").ensure()
    with pytest.raises(ValueError, match="not MusicGen-melody"):
        run_batch(good, "musicgen-tiny", BatchOptions(log_to_mlflow=False), settings)


def test_cli_melody_option(tmp_path: Path) -> None:
    melody = _tone(tmp_path / "m.wav", 262.0)
    env = {**os.environ, "MUSICOPS_HOME": str(tmp_path / "home"), "MUSICOPS_TORCH_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "musicops.cli", "models", "generate", "--model",
                             "musicgen-melody-tiny", "-p", "calm flute", "--duration", "0.5", "--melody", str(melody),
                             "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    missing = subprocess.run([sys.executable, "-m", "musicops.cli", "models", "generate", "--model",
                              "musicgen-melody-tiny", "-p", "calm flute", "--duration", "0.5", "--melody",
                              str(tmp_path / "nope.wav")], env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "melody file not found" in missing.stdout + missing.stderr
