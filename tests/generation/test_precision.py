"""Decoder precision through batch generation: its own cache entries, recorded, fp32 unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicops.config import Settings
from musicops.generation.batch import run_batch
from musicops.generation.planning import BatchOptions
from musicops.store.assets import open_asset_store

pytestmark = pytest.mark.slow  # three small generations with the tiny preset


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "warm analog synth arpeggio", "duration_s": 1.0, "seed": 3}) + "\n")
    return path


def _audio(settings: Settings, record) -> np.ndarray:  # noqa: ANN001 - AssetRecord
    store = open_asset_store(settings)
    data, _ = sf.read(store.path_for(record.files["wav"]["sha256"], "wav"), dtype="float32")
    return data


def test_int8_is_its_own_asset_recorded_as_such_and_fp32_is_unchanged(tmp_path: Path) -> None:
    settings = Settings.from_values(home=tmp_path / "home").ensure()
    prompts = _prompts(tmp_path)
    quiet = BatchOptions(log_to_mlflow=False)
    fp32 = run_batch(prompts, "musicgen-tiny", quiet, settings)
    int8 = run_batch(prompts, "musicgen-tiny", BatchOptions(log_to_mlflow=False, precision="int8"), settings)
    again = run_batch(prompts, "musicgen-tiny", BatchOptions(log_to_mlflow=False, precision="int8"), settings)

    (a,), (b,), (c,) = fp32.outcomes, int8.outcomes, again.outcomes
    assert not a.cache_hit and not b.cache_hit and c.cache_hit  # int8 never reuses the fp32 asset
    assert a.record.asset_id != b.record.asset_id == c.record.asset_id
    assert "precision" not in a.record.params and b.record.params["precision"] == "int8"  # recorded
    assert {k: v for k, v in b.record.params.items() if k != "precision"} == a.record.params
    assert not np.array_equal(_audio(settings, a.record), _audio(settings, b.record))


def test_an_unknown_precision_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8"):
        BatchOptions(precision="fp16")


def test_cli_names_a_bad_precision_and_exits_2(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUSICOPS_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "musicops.cli", "generate", "batch", str(_prompts(tmp_path)),
                             "--precision", "fp16"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "precision must be one of fp32, bf16, int8" in result.stderr
    assert not (tmp_path / "home" / "assets").exists() or not any((tmp_path / "home" / "assets").rglob("*.wav"))
