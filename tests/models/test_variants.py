"""MusicGen variants as tiny random-init models of their real architectures: stereo and melody."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from musicops.models.base import GenerationParams
from musicops.models.musicgen import TransformersMusicGen

STORE_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MUSICOPS_DATABASE_URL", "MUSICOPS_ASSET_STORE",
              "MUSICOPS_SERVING_DATABASE_URL")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


@pytest.fixture(scope="module")
def stereo() -> TransformersMusicGen:
    return TransformersMusicGen.from_preset("musicgen-stereo-tiny")


@pytest.fixture(scope="module")
def melody_model():
    return TransformersMusicGen.from_preset("musicgen-melody-tiny")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARS}
    env.update({"MUSICOPS_HOME": str(home), "MUSICOPS_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"})
    return env


# ------------------------------------------------------------------------------ stereo
def test_stereo_preset_is_the_stereo_architecture(stereo) -> None:
    from musicops.models.loading import resolve_model

    assert stereo.audio_channels == 2 and stereo.num_codebooks == 8
    assert stereo.model.config.audio_encoder.audio_channels == 1  # each channel coded by the mono EnCodec
    assert stereo.tokens_for(0.5) == TransformersMusicGen.from_preset().tokens_for(0.5)  # delay depth is K=4
    assert resolve_model("musicgen-stereo-tiny").kind == "preset"


@pytest.mark.parametrize("params", [
    GenerationParams(duration_s=0.6, do_sample=False, guidance_scale=3.0),
    GenerationParams(duration_s=0.6, temperature=0.9, top_k=50, top_p=0.95),
], ids=["greedy-guided", "sampled"])
def test_stereo_clips_are_two_channels_and_equal_transformers_generate(stereo, params) -> None:
    prompts = ["calm piano", "a much longer prompt about energetic drums and bass"]
    clips = stereo.generate(prompts, params, [1, 2])
    expected = stereo.generate_reference(prompts, params, [1, 2])
    assert all(clip.shape == (int(round(0.6 * stereo.sample_rate)), 2) for clip in clips)
    assert all(np.array_equal(a, b) for a, b in zip(clips, expected, strict=True))
    assert not np.array_equal(clips[0][:, 0], clips[0][:, 1])  # left and right are their own codebooks


def test_stereo_save_and_load_back(stereo, tmp_path) -> None:
    params = GenerationParams(duration_s=0.5)
    loaded = TransformersMusicGen.from_dir(stereo.save(tmp_path / "stereo"))
    assert loaded.audio_channels == 2
    assert np.array_equal(loaded.generate(["x"], params, 3)[0], stereo.generate(["x"], params, 3)[0])


def test_stereo_fine_tune_three_steps_and_load_back(tmp_path) -> None:
    import torch

    from musicops.training.data import EncodedDataset
    from musicops.training.finetune import FineTuneConfig, train

    model = TransformersMusicGen.from_preset("musicgen-stereo-tiny")
    codes = torch.randint(0, 2048, (2, 8, 20), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.model.decoder.named_parameters()}
    result = train(model, EncodedDataset(["calm piano", "epic drums"], codes, ["synthetic"] * 2),
                   FineTuneConfig(steps=3, batch_size=2, cond_dropout=0.0))
    assert len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert any(not torch.equal(before[n], p) for n, p in model.model.decoder.named_parameters())
    loaded = TransformersMusicGen.from_dir(model.save(tmp_path / "tuned"))
    params = GenerationParams(duration_s=0.5, do_sample=False)
    assert loaded.audio_channels == 2
    assert np.array_equal(loaded.generate(["calm piano"], params, 0)[0], model.generate(["calm piano"], params, 0)[0])


@pytest.mark.slow  # one CLI batch run
def test_stereo_generate_batch_stores_two_channel_assets(tmp_path) -> None:
    import soundfile as sf

    home = tmp_path / "home"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "wide stereo pad", "duration_s": 1.0, "seed": 3}) + "\n")
    result = subprocess.run([sys.executable, "-m", "musicops.cli", "generate", "batch", str(prompts),
                             "--model", "musicgen-stereo-tiny"], env=_env(home), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    wavs = list(home.rglob("*.wav"))
    assert wavs and all(sf.info(str(w)).channels == 2 for w in wavs)


@pytest.mark.slow  # one musicops serve process
def test_stereo_serve_answers_a_request(tmp_path) -> None:
    import httpx
    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers.servers import musicops_serve

    home = tmp_path / "serve"
    server = musicops_serve(home, ["--model", "musicgen-stereo-tiny", "--no-auth"]).start()
    try:
        response = httpx.post(f"{server.url}/v1/generate", timeout=600,
                              json={"prompt": "stereo check: wide pad", "duration_s": 0.5, "seed": 5})
        assert response.status_code == 200, response.text
        assert response.json()["assets"]
    finally:
        server.stop()
    wavs = list(home.rglob("*.wav"))
    assert wavs and all(sf.info(str(w)).channels == 2 for w in wavs)


# ------------------------------------------------------------------------------ melody
def _tone(hz: float, seconds: float = 2.0, rate: int = 32_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_melody_conditions_the_clip(melody_model, tmp_path) -> None:
    import soundfile as sf

    from musicops.models.melody import Melody, MelodyMusicGen

    assert isinstance(melody_model, MelodyMusicGen)
    sf.write(tmp_path / "a.wav", _tone(440.0), 32_000)
    sf.write(tmp_path / "b.wav", _tone(311.1), 32_000)
    a, b = Melody.from_file(tmp_path / "a.wav"), Melody.from_file(tmp_path / "b.wav")
    assert a.sha256 != b.sha256 and len(a.sha256) == 64
    chroma = melody_model.processor.feature_extractor(a)
    assert chroma.shape[-1] == 12 and int(chroma[0, 0].argmax()) == 9  # A
    params = GenerationParams(duration_s=0.6)
    with_a = melody_model.generate(["calm piano"], params, 1, melody=a)[0]
    assert with_a.shape == (int(round(0.6 * melody_model.sample_rate)), 1)
    assert np.array_equal(with_a, melody_model.generate(["calm piano"], params, 1, melody=a)[0])
    assert not np.array_equal(with_a, melody_model.generate(["calm piano"], params, 1, melody=b)[0])
    assert not np.array_equal(with_a, melody_model.generate(["calm piano"], params, 1)[0])


def test_melody_save_and_load_back(melody_model, tmp_path) -> None:
    from musicops.models.melody import Melody, MelodyMusicGen

    tone = Melody(_tone(262.0), 32_000)
    directory = melody_model.save(tmp_path / "melody")
    assert json.loads((directory / "config.json").read_text())["model_type"] == "musicgen_melody"
    loaded = TransformersMusicGen.from_dir(directory)
    assert isinstance(loaded, MelodyMusicGen)
    params = GenerationParams(duration_s=0.5)
    assert np.array_equal(loaded.generate(["x"], params, 2, melody=tone)[0],
                          melody_model.generate(["x"], params, 2, melody=tone)[0])


def test_melody_is_refused_by_the_decode_engine(melody_model) -> None:
    with pytest.raises(ValueError, match="decoder-only"):
        melody_model.engine()
