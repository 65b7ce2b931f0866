"""The clap-tiny embedder runs the real transformers CLAP code: deterministic, windowed, provenance-tagged."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from musicops.evaluation.embedders import (
    ClapEmbedder,
    Embedder,
    available_embedders,
    build_tiny_clap,
    get_embedder,
)
from musicops.evaluation.provenance import ProvenanceMismatchError, ensure_comparable

SR = 48_000


@pytest.fixture(scope="module")
def clap() -> ClapEmbedder:
    embedder = get_embedder("clap-tiny")
    assert isinstance(embedder, ClapEmbedder)
    return embedder


def _tone(freq: float, seconds: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds: float, seed: int = 0, rate: int = SR) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def test_same_input_gives_bitwise_identical_embeddings(clap):
    audio = _noise(3.0)
    first, _ = clap.embed_windows(audio, SR)
    second, _ = clap.embed_windows(audio.copy(), SR)
    assert np.array_equal(first, second)
    rebuilt, _ = get_embedder("clap-tiny").embed_windows(audio, SR)
    assert np.array_equal(first, rebuilt)
    clips = [audio, _tone(220, 2.5)]
    assert np.array_equal(clap.embed_audio(clips, SR), clap.embed_audio(clips, SR))


def test_windows_are_fixed_and_cover_the_clip(clap):
    assert (clap.window_s, clap.hop_s, clap.sample_rate) == (2.0, 1.0, SR)
    emb, offsets = clap.embed_windows(_noise(5.0), SR)
    np.testing.assert_array_equal(offsets, [0.0, 1.0, 2.0, 3.0])
    assert emb.shape == (4, clap.dim) and emb.dtype == np.float32
    _, offsets = clap.embed_windows(_noise(5.5), SR)  # last window zero-padded
    np.testing.assert_array_equal(offsets, [0.0, 1.0, 2.0, 3.0, 4.0])
    short, offsets = clap.embed_windows(_noise(0.5), SR)
    assert short.shape == (1, clap.dim) and offsets.tolist() == [0.0]


def test_embeddings_are_unit_norm(clap):
    windows, _ = clap.embed_windows(_noise(3.0), SR)
    clips = clap.embed_audio([_noise(4.0, seed=1), _tone(440, 1.0)], SR)
    texts = clap.embed_text(["a calm piano melody", "upbeat electronic drums at 128 bpm"])
    for emb in (windows, clips, texts):
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embed_audio_is_the_renormalised_mean_and_batch_size_does_not_matter(clap):
    clips = [_noise(4.0, seed=2), _tone(330, 3.0), _noise(1.0, seed=3)]
    batched = clap.embed_audio(clips, SR, batch_size=16)
    np.testing.assert_allclose(clap.embed_audio(clips, SR, batch_size=1), batched, atol=1e-5)
    windows, _ = clap.embed_windows(clips[0], SR)
    mean = windows.mean(axis=0)
    np.testing.assert_allclose(batched[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert clap.embed_audio([], SR).shape == (0, clap.dim)


def test_resamples_and_downmixes_to_the_embedder_rate(clap):
    native, native_offsets = clap.embed_windows(_tone(440, 5.0), SR)
    from_32k, offsets = clap.embed_windows(_tone(440, 5.0, rate=32_000), 32_000)
    np.testing.assert_array_equal(offsets, native_offsets)
    cosines = np.sum(native * from_32k, axis=1)
    assert cosines.min() > 0.99
    stereo = np.stack([_noise(2.0, seed=4), _noise(2.0, seed=5)], axis=1)
    np.testing.assert_allclose(clap.embed_windows(stereo, SR)[0], clap.embed_windows(stereo.mean(axis=1), SR)[0],
                               atol=1e-6)


def test_different_audio_gives_different_embeddings(clap):
    a, b, c = clap.embed_audio([_noise(2.0, seed=6), _tone(110, 2.0), _tone(3000, 2.0)], SR)
    assert float(a @ b) < 0.999 and float(b @ c) < 0.999


def test_rejects_unusable_audio(clap):
    with pytest.raises(ValueError, match="empty"):
        clap.embed_windows(np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        clap.embed_windows(np.full(SR, np.nan, dtype=np.float32), SR)
    with pytest.raises(ValueError, match="frames"):
        clap.embed_windows(np.zeros((2, 2, SR), dtype=np.float32), SR)


def test_embed_text_handles_arbitrary_prompts_deterministically(clap):
    prompts = ["a calm piano melody", "Upbeat électronique, 🎵 drums @ 174 BPM!", "x" * 2000, ""]
    first = clap.embed_text(prompts)
    assert first.shape == (4, clap.dim)
    assert np.array_equal(first, clap.embed_text(prompts))
    assert float(first[0] @ first[1]) < 0.999
    tokens = clap.processor.tokenizer("a calm piano melody")["input_ids"]
    assert clap.processor.tokenizer.unk_token_id not in tokens
    assert len(tokens) == 6  # <s> a Ġcalm Ġpiano Ġmelody </s>: the word merges work


def test_provenance_and_weight_hash(clap):
    prov = clap.provenance(loudness_normalisation="-23 LUFS pyloudnorm", reference_set_sha256="ab" * 32)
    assert prov.embedder == "clap-tiny" and prov.sample_rate == SR
    assert prov.resampler == "scipy.resample_poly"
    assert (prov.window_s, prov.hop_s) == (2.0, 1.0)
    assert prov.loudness_normalisation == "-23 LUFS pyloudnorm" and prov.reference_set_sha256 == "ab" * 32
    assert len(prov.weights_sha256) == 64
    assert get_embedder("clap-tiny").weights_sha256 == prov.weights_sha256
    assert ClapEmbedder.from_preset(seed=1).weights_sha256 != prov.weights_sha256
    ensure_comparable(prov, get_embedder("clap-tiny").provenance("-23 LUFS pyloudnorm", "ab" * 32))
    with pytest.raises(ProvenanceMismatchError, match="loudness_normalisation"):
        ensure_comparable(prov, clap.provenance())


def test_directory_round_trip_loads_offline_with_identical_embeddings(clap, tmp_path):
    clap.model.save_pretrained(tmp_path)
    clap.processor.save_pretrained(tmp_path)
    loaded = get_embedder("clap", str(tmp_path))
    assert loaded.name == "clap" and (loaded.window_s, loaded.hop_s, loaded.sample_rate) == (2.0, 1.0, SR)
    audio = _noise(3.0, seed=7)
    assert np.array_equal(loaded.embed_windows(audio, SR)[0], clap.embed_windows(audio, SR)[0])
    assert np.array_equal(loaded.embed_text(["warm bass groove"]), clap.embed_text(["warm bass groove"]))
    assert len(loaded.weights_sha256) == 64 and loaded.weights_sha256 == get_embedder("clap", tmp_path).weights_sha256
    with pytest.raises(FileNotFoundError, match="config.json"):
        get_embedder("clap", str(tmp_path / "nowhere"))
    # transformers 5 silently builds a specials-only RoBERTa tokenizer when the vocabulary is missing
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="only 5 tokens"):
        get_embedder("clap", str(tmp_path))


def test_fusion_checkpoints_are_deterministic_and_leave_numpys_rng_alone():
    """Fused CLAP (laion/clap-htsat-fused) needs 'fusion' features, whose extractor draws from numpy's
    global RNG; every window is exactly max_length, so no crop is random and is_longer is all False."""
    from transformers import ClapConfig, ClapModel

    model, processor = build_tiny_clap(0)
    config = model.config.to_dict()
    config["audio_config"].update(enable_fusion=True, fusion_type="aff_2d")
    fused = ClapModel(ClapConfig(**{k: config[k] for k in ("text_config", "audio_config", "projection_dim")}))
    embedder = ClapEmbedder(fused, processor, name="clap-fused-tiny", weights_sha256="0" * 64, hop_s=1.0)
    audio = _noise(3.0, seed=8)
    before = np.random.get_state()[1].copy()
    first, _ = embedder.embed_windows(audio, SR)
    assert np.array_equal(first, embedder.embed_windows(audio, SR)[0])
    assert np.array_equal(before, np.random.get_state()[1])


def test_registry_names_and_errors():
    assert {"clap-tiny", "clap", "laion-clap"} <= set(available_embedders())
    with pytest.raises(ValueError, match="known embedders: clap, clap-tiny, laion-clap"):
        get_embedder("openl3")
    with pytest.raises(ValueError, match="needs path"):
        get_embedder("clap")
    with pytest.raises(ValueError, match="no path"):
        get_embedder("clap-tiny", path="/tmp")
    assert issubclass(ClapEmbedder, Embedder)


@pytest.mark.skipif(importlib.util.find_spec("laion_clap") is not None, reason="laion_clap is installed")
def test_laion_clap_missing_package_says_how_to_install():
    with pytest.raises(ImportError, match=r"pip install laion-clap; note its numpy<2 pin"):
        get_embedder("laion-clap", path="/nonexistent")


def test_clap_weights_named_by_an_mlflow_runs_uri_load_like_the_directory(clap, tmp_path, monkeypatch):
    """A suite can name real CLAP weights logged to MLflow (`embedder_path: runs:/ID/clap`): the
    artifacts are fetched through MLflow's client and load exactly like the directory they came from."""
    import mlflow

    from musicops.config import get_settings
    from musicops.registry import configure_mlflow

    monkeypatch.setenv("MUSICOPS_HOME", str(tmp_path / "home"))
    configure_mlflow(get_settings())
    source = tmp_path / "weights"
    clap.model.save_pretrained(source)
    clap.processor.save_pretrained(source)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(source), "clap")
    loaded = get_embedder("clap", f"runs:/{run.info.run_id}/clap")
    assert loaded.name == f"clap:runs:/{run.info.run_id}/clap"
    audio = _noise(3.0, seed=3)
    assert np.array_equal(loaded.embed_windows(audio, SR)[0], clap.embed_windows(audio, SR)[0])
    with pytest.raises(FileNotFoundError, match="elsewhere: cannot fetch CLAP weights through MLflow"):
        get_embedder("clap", f"runs:/{run.info.run_id}/elsewhere")
