"""Stems: HTDemucs (the released htdemucs architecture, random init: offline) separates delivered
clips into drums/bass/other/vocals; each stem is an asset linked to its parent (params stem_of/stem),
with the separator in provenance, and the stored stems sum back to the stored mix within the bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicops.audio.stems import (
    HTDEMUCS_KWARGS,
    STEM_NAMES,
    SUM_TO_MIX_MAX_ABS,
    load_separator,
    random_init_htdemucs,
    sum_to_mix_error,
)
from musicops.config import get_settings
from musicops.generation.batch import run_batch
from musicops.generation.delivery import find_stems
from musicops.generation.planning import BatchOptions, item_params
from musicops.generation.prompts import expand, read_prompts
from musicops.store.assets import open_asset_store
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # HTDemucs pads every clip to its 7.8 s segment: ~10 s a clip on one thread

MIN_SNR_DB = 100.0  # what SUM_TO_MIX_MAX_ABS means on a delivered (-14 LUFS) clip


@pytest.fixture(scope="module")
def separator():
    return load_separator("htdemucs-random")


def test_separator_is_the_released_architecture_and_runs_on_real_shaped_input(separator) -> None:
    model = separator.model
    assert sum(p.numel() for p in model.parameters()) == 41_984_456  # htdemucs 955717e8
    assert model.sources == list(STEM_NAMES) and model.samplerate == 44100 and float(model.segment) == 7.8
    assert HTDEMUCS_KWARGS["bottom_channels"] == 512 and HTDEMUCS_KWARGS["t_layers"] == 5
    # Seeded: the same weights every time.
    again = random_init_htdemucs()
    assert all(np.array_equal(a.detach().numpy(), b.detach().numpy())
               for a, b in zip(model.parameters(), again.parameters(), strict=True))
    assert "torchaudio" not in sys.modules

    rate = 32000  # MusicGen's rate: resampled to 44.1 kHz and back
    t = np.arange(int(0.5 * rate)) / rate
    rng = np.random.default_rng(0)
    mix = np.stack([0.3 * np.sin(2 * np.pi * 110 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    mix = (mix + 0.05 * rng.standard_normal(mix.shape)).astype(np.float32)
    stems = separator.separate(mix, rate)
    assert list(stems) == list(STEM_NAMES)
    assert all(s.shape == mix.shape and s.dtype == np.float32 and np.isfinite(s).all() for s in stems.values())
    assert any(np.abs(stems[name]).max() > 1e-4 for name in ("drums", "bass", "vocals"))  # the model's output
    max_abs, snr = sum_to_mix_error(stems, mix)
    assert max_abs <= SUM_TO_MIX_MAX_ABS and snr >= MIN_SNR_DB
    assert separator.provenance()["weights"] == "random-init"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("stems")
    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "stem probe", "duration_s": 0.5, "seed": 7, "n_variations": 2}) + "\n")
    old = os.environ.get("MUSICOPS_HOME")
    os.environ["MUSICOPS_HOME"] = str(root / "home")
    try:
        settings = get_settings()
        options = BatchOptions(log_to_mlflow=False, stems="htdemucs-random")
        result = run_batch(prompts, "musicgen-tiny", options, settings)
        again = run_batch(prompts, "musicgen-tiny", options, settings)  # all cached: stems found, not redone
    finally:
        if old is None:
            os.environ.pop("MUSICOPS_HOME", None)
        else:
            os.environ["MUSICOPS_HOME"] = old
    return prompts, settings, options, result, again


def test_four_stem_assets_per_clip_linked_to_their_parent(batch) -> None:
    prompts, settings, options, result, again = batch
    assert len(result.delivered) == 2 and result.metrics["n_stems"] == 8
    db = ProvenanceDB.from_settings(settings)
    try:
        provenance = {"name": "htdemucs", "weights": "random-init"}
        for outcome in result.delivered:
            parent = outcome.record
            stems = find_stems(db, parent, load_separator("htdemucs-random").provenance(), list(options.formats))
            assert list(stems) == list(STEM_NAMES)
            for name, stem in stems.items():
                assert stem.params["stem_of"] == parent.asset_id and stem.params["stem"] == name
                assert stem.params["separator"].items() >= provenance.items()
                assert stem.asset_id != parent.asset_id and stem.passed, stem.checks
                assert stem.batch_id == parent.batch_id and f"stem:{name}" in stem.tags
                assert stem.sample_rate == parent.sample_rate and stem.duration_s == parent.duration_s
                assert stem.postprocess["loudness_normalisation"] is None
                assert stem.true_peak_after is None or stem.true_peak_after <= options.postprocess.true_peak_dbtp
        all_assets = db.list_assets()
        assert len(all_assets) == 2 + 8
        assert sum(1 for a in all_assets if a.params.get("stem_of")) == 8
    finally:
        db.close()
    # Parents are untouched by --stems: their params and cache keys are those of a plain batch.
    items = expand(read_prompts(prompts))
    assert all(o.record.params == item_params(i, BatchOptions()) for o, i in zip(result.outcomes, items, strict=True))
    # A rerun finds every clip and every stem in the cache.
    assert again.metrics["n_cache_hits"] == 2 and again.metrics["n_stems"] == 8
    assert len(ProvenanceDB.from_settings(settings).list_assets()) == 10


def test_stored_stems_sum_back_to_the_stored_mix_within_the_bound(batch) -> None:
    _prompts, settings, options, result, _again = batch
    store = open_asset_store(settings)
    db = ProvenanceDB.from_settings(settings)
    try:
        for outcome in result.delivered:
            parent = outcome.record
            stems = find_stems(db, parent, load_separator("htdemucs-random").provenance(), list(options.formats))
            for fmt in ("wav", "flac"):
                mix, rate = sf.read(store.path_for(parent.files[fmt]["sha256"], fmt), dtype="float64", always_2d=True)
                audio = {n: sf.read(store.path_for(s.files[fmt]["sha256"], fmt), dtype="float64", always_2d=True)[0]
                         for n, s in stems.items()}
                gain = stems["other"].postprocess["stem_gain"]
                max_abs, snr = sum_to_mix_error(audio, mix, gain)
                assert max_abs <= SUM_TO_MIX_MAX_ABS and snr >= MIN_SNR_DB, (fmt, max_abs, snr)
                assert rate == parent.sample_rate
            check = next(c for c in stems["drums"].checks if c["name"] == "sum_to_mix")
            assert check["passed"] and check["value"] <= SUM_TO_MIX_MAX_ABS
    finally:
        db.close()


def test_unknown_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="stems must be one of"):
        BatchOptions(stems="spleeter")
    with pytest.raises(ValueError, match="separator must be one of"):
        load_separator("spleeter")


def test_cli_stems_through_a_subprocess(tmp_path: Path, monkeypatch) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "cli stem probe", "duration_s": 0.5, "seed": 3}) + "\n")
    home = tmp_path / "home"
    env = {**os.environ, "MUSICOPS_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "musicops.cli", "generate", "batch", str(prompts),
                          "--stems", "--separator", "htdemucs-random"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 stem asset(s)" in out.stdout
    monkeypatch.setenv("MUSICOPS_HOME", str(home))
    db = ProvenanceDB.from_settings(get_settings())
    try:
        assets = db.list_assets()
    finally:
        db.close()
    parents = [a for a in assets if "stem_of" not in a.params]
    assert len(parents) == 1 and len(assets) == 5
    assert sorted(a.params["stem"] for a in assets if a.params.get("stem_of") == parents[0].asset_id) == sorted(STEM_NAMES)
