"""The transformers MusicGen backend: tiny preset, durations, determinism, save/load, bad dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from musicops.models.base import GenerationParams
from musicops.models.musicgen import ModelLoadError, TransformersMusicGen

PROMPTS = ["calm piano melody in C major", "Energetic drums & bass at 128 BPM"]


@pytest.fixture(scope="module")
def tiny() -> TransformersMusicGen:
    return TransformersMusicGen.from_preset("musicgen-tiny")


@pytest.mark.parametrize("duration", [0.5, 1.0, 1.3])
def test_generated_length_matches_request(tiny: TransformersMusicGen, duration: float) -> None:
    clips = tiny.generate(PROMPTS, GenerationParams(duration_s=duration), seed=0)
    assert len(clips) == 2
    for clip in clips:
        assert clip.dtype == np.float32 and clip.ndim == 2 and clip.shape[1] == 1
        assert abs(clip.shape[0] / tiny.sample_rate - duration) <= 0.05 * duration
        assert np.isfinite(clip).all()
        assert np.abs(clip).max() > 0, "randomised codebooks must not decode to digital silence"


def test_same_seed_same_audio_other_seed_other_audio(tiny: TransformersMusicGen) -> None:
    params = GenerationParams(duration_s=0.5)
    a = tiny.generate(PROMPTS, params, seed=7)
    b = tiny.generate(PROMPTS, params, seed=7)
    c = tiny.generate(PROMPTS, params, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_preset_is_deterministic_across_builds() -> None:
    one = TransformersMusicGen.from_preset().model.state_dict()
    two = TransformersMusicGen.from_preset().model.state_dict()
    assert all(np.array_equal(one[k].numpy(), two[k].numpy()) for k in one)


def test_save_load_round_trip_gives_identical_output(tiny: TransformersMusicGen, tmp_path) -> None:
    params = GenerationParams(duration_s=0.5)
    before = tiny.generate(PROMPTS, params, seed=3)
    tiny.save(tmp_path / "model")
    loaded = TransformersMusicGen.from_dir(tmp_path / "model")
    after = loaded.generate(PROMPTS, params, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))
    assert loaded.processor.tokenizer(PROMPTS[1])["input_ids"] == tiny.processor.tokenizer(PROMPTS[1])["input_ids"]


def test_tokenizer_knows_music_words(tiny: TransformersMusicGen) -> None:
    tokenizer = tiny.processor.tokenizer
    ids = tokenizer("piano drums")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert len(ids) == 3  # two whole-word pieces + </s>


def test_unknown_preset_and_bad_directories(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="unknown preset"):
        TransformersMusicGen.from_preset("musicgen-huge")
    with pytest.raises(ModelLoadError, match="no config.json"):
        TransformersMusicGen.from_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="expected 'musicgen'"):
        TransformersMusicGen.from_dir(tmp_path)


def test_corrupt_weights_are_named(tiny: TransformersMusicGen, tmp_path) -> None:
    tiny.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load MusicGen weights"):
        TransformersMusicGen.from_dir(tmp_path / "m")


def test_generation_params_are_checked() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        GenerationParams(duration_s=-1)
    with pytest.raises(ValueError, match="duration_s"):
        GenerationParams(duration_s=10_000)
    with pytest.raises(ValueError, match="temperature"):
        GenerationParams(temperature=0)


def test_a_clip_does_not_depend_on_its_batch_mates(tiny: TransformersMusicGen) -> None:
    params = GenerationParams(duration_s=0.5)
    prompts = ["calm piano", "a much longer prompt about energetic drums and bass at 128 BPM", "dreamy pad"]
    batch = tiny.generate(prompts, params, seed=[11, 12, 13])
    for prompt, seed, clip in zip(prompts, [11, 12, 13], batch, strict=True):
        assert np.array_equal(tiny.generate([prompt], params, seed=seed)[0], clip)


def test_greedy_decoding_is_deterministic(tiny: TransformersMusicGen) -> None:
    params = GenerationParams(duration_s=0.5, do_sample=False)
    a = tiny.generate(["calm piano"], params, seed=0)[0]
    assert np.array_equal(a, tiny.generate(["calm piano"], params, seed=99)[0])
