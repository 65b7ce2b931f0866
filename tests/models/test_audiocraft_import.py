"""audiocraft checkpoints: converted to the default backend, registered with their origin, and
generating what audiocraft itself generates.

The reference side runs in its own virtual environment (`make audiocraft-env`, built by
`make test`), because audiocraft 1.3.0 cannot share the main environment's pins. That process
builds a tiny MusicGen with audiocraft's own builders, exports it in audiocraft's format and
generates greedily; this side converts the export with musicops alone and compares.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musicops.models.audiocraft_import import (
    CODEC_FILE,
    LM_FILE,
    ORIGIN_FILE,
    convert_checkpoint,
    parse_config,
)
from musicops.models.base import GenerationParams
from musicops.models.musicgen import ModelLoadError

REPO = Path(__file__).resolve().parents[2]
REFERENCE_SCRIPT = Path(__file__).with_name("audiocraft_reference.py")
PROMPTS = ["warm piano melody with soft drums", "fast electronic beat"]
SEED = 7
DURATION_S = 1.0
# Same greedy codes, same float32 EnCodec decode: differences are float rounding only. A 1% change
# to one codec bias already moves the audio by 4e-4, a swapped attention projection by 5e-2.
AUDIO_TOLERANCE = 1e-5


def audiocraft_python() -> Path | None:
    configured = os.environ.get("MUSICOPS_AUDIOCRAFT_PYTHON")
    candidate = Path(configured) if configured else REPO / ".venv-audiocraft" / "bin" / "python"
    return candidate if candidate.is_file() else None


def build_text_encoder(out: Path) -> Path:
    """A tiny random T5 as wide as t5-small (audiocraft sizes its projection from the name)."""
    from transformers import T5Config, T5EncoderModel

    from musicops.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=512, d_kv=16, d_ff=64, num_layers=1,
                      num_decoder_layers=1, num_heads=4, decoder_start_token_id=0)
    T5EncoderModel(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """audiocraft's own tiny checkpoint and greedy generations (built once per module)."""
    python = audiocraft_python()
    if python is None:
        message = ("audiocraft environment missing: run `make audiocraft-env` "
                   "(or set MUSICOPS_AUDIOCRAFT_PYTHON)")
        if os.environ.get("MUSICOPS_REQUIRE_AUDIOCRAFT") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("audiocraft")
    text_encoder = build_text_encoder(root / "t5")
    out = root / "reference"
    command = [str(python), str(REFERENCE_SCRIPT), str(text_encoder), str(out), "--seed", str(SEED),
               "--duration", str(DURATION_S)]
    for prompt in PROMPTS:
        command += ["--prompt", prompt]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"audiocraft reference failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return {"checkpoint": out / "checkpoint", "reference": out / "reference.npz", "text_encoder": text_encoder,
            "hf_home": out / "hf-home", "checkpoint_t5": out / "checkpoint-t5-finetuned",
            "reference_t5": out / "reference-t5-finetuned.npz"}


@pytest.fixture
def checkpoint_copy(reference: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "my-finetune"
    shutil.copytree(reference["checkpoint"], copy)
    return copy


def registered_models() -> list[str]:
    from mlflow import MlflowClient

    from musicops.registry import configure_mlflow

    configure_mlflow()
    return [model.name for model in MlflowClient().search_registered_models()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_audiocraft_checkpoint_generates_what_audiocraft_generates(reference: dict[str, Path],
                                                                   checkpoint_copy: Path) -> None:
    from musicops.models.loading import load_model
    from musicops.training.run import TAG_PREFIX, import_audiocraft_checkpoint

    (checkpoint_copy / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\nA fine-tune.\n")
    version, conversion = import_audiocraft_checkpoint(checkpoint_copy, "ac-tiny",
                                                       text_encoder=reference["text_encoder"])
    assert version == "1"
    assert (conversion.directory / ORIGIN_FILE).is_file()

    model = load_model(f"models:/ac-tiny/{version}")
    tags = model.info.tags
    assert tags[f"{TAG_PREFIX}origin"] == "audiocraft"
    assert tags[f"{TAG_PREFIX}audiocraft.version"] == "1.3.0"
    assert tags[f"{TAG_PREFIX}audiocraft.state_dict_sha256"] == sha256(checkpoint_copy / LM_FILE)
    assert tags[f"{TAG_PREFIX}audiocraft.compression_state_dict_sha256"] == sha256(checkpoint_copy / CODEC_FILE)
    assert tags[f"{TAG_PREFIX}licence"] == "cc-by-nc-4.0"

    expected = assert_generates_like_audiocraft(model, reference["reference"])
    # the comparison can tell prompts apart: each prompt gives its own clip
    assert np.abs(expected["audio"][0] - expected["audio"][1]).max() > 100 * AUDIO_TOLERANCE


def assert_generates_like_audiocraft(model, reference_npz: Path) -> dict[str, np.ndarray]:
    """Greedy generation through musicops equals audiocraft's for every reference prompt."""
    expected = dict(np.load(reference_npz))
    assert list(expected["prompts"]) == PROMPTS
    params = GenerationParams(duration_s=DURATION_S, do_sample=False, guidance_scale=3.0)
    for index, prompt in enumerate(PROMPTS):
        ours = model.generate([prompt], params, seed=SEED)[0][:, 0]
        theirs = expected["audio"][index][0]
        assert ours.shape == theirs.shape == (int(DURATION_S * model.sample_rate),)
        assert np.abs(theirs).max() > 0.01, "the reference must not be silence"
        assert np.abs(ours - theirs).max() <= AUDIO_TOLERANCE, prompt
    return expected


@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_t5_fine_tuned_with_the_lm_is_taken_from_the_checkpoint(reference: dict[str, Path]) -> None:
    """--text-encoder gives the hub T5 (config, tokenizer); the fine-tuned weights in state_dict.bin win."""
    from musicops.models.loading import load_model
    from musicops.training.run import TAG_PREFIX, import_audiocraft_checkpoint

    version, conversion = import_audiocraft_checkpoint(reference["checkpoint_t5"], "ac-t5",
                                                       text_encoder=reference["text_encoder"])
    assert conversion.origin["text_encoder"]["fine_tuned_in_checkpoint"] is True
    model = load_model(f"models:/ac-t5/{version}")
    assert "fine-tuned" in model.info.tags[f"{TAG_PREFIX}audiocraft.text_encoder"]
    tuned = assert_generates_like_audiocraft(model, reference["reference_t5"])
    plain = np.load(reference["reference"])
    assert np.abs(tuned["audio"] - plain["audio"]).max() > 100 * AUDIO_TOLERANCE, "the T5 change must show"


@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_pretrained_codec_reference_uses_the_given_codec_dir(reference: dict[str, Path], checkpoint_copy: Path,
                                                            tmp_path: Path) -> None:
    """audiocraft's export_pretrained_compression_model writes only a codec name; --codec supplies it."""
    from musicops.models.musicgen import TransformersMusicGen

    full = convert_checkpoint(checkpoint_copy, tmp_path / "full", text_encoder=reference["text_encoder"])
    codec_dir = tmp_path / "encodec_32khz"
    TransformersMusicGen.from_dir(full.directory).model.audio_encoder.save_pretrained(codec_dir)
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"},
               checkpoint_copy / CODEC_FILE)
    with pytest.raises(ModelLoadError, match=rf"{CODEC_FILE}: names the pretrained codec .*--codec"):
        convert_checkpoint(checkpoint_copy, tmp_path / "out", text_encoder=reference["text_encoder"])
    converted = convert_checkpoint(checkpoint_copy, tmp_path / "out", text_encoder=reference["text_encoder"],
                                   codec=codec_dir)
    assert converted.origin["codec"] == "facebook/encodec_32khz"
    assert_generates_like_audiocraft(TransformersMusicGen.from_dir(converted.directory), reference["reference"])


@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_legacy_torch_format_converts_too(reference: dict[str, Path], checkpoint_copy: Path, tmp_path: Path) -> None:
    """Files are memory-mapped when they can be; old (pre-zip) torch.save files are read whole."""
    from musicops.models.musicgen import TransformersMusicGen

    for name in (LM_FILE, CODEC_FILE):
        package = torch.load(checkpoint_copy / name, weights_only=True)
        torch.save(package, checkpoint_copy / name, _use_new_zipfile_serialization=False)
    converted = convert_checkpoint(checkpoint_copy, tmp_path / "out", text_encoder=reference["text_encoder"])
    assert_generates_like_audiocraft(TransformersMusicGen.from_dir(converted.directory), reference["reference"])


@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_text_encoder_comes_from_the_offline_cache_or_a_clear_error(reference: dict[str, Path],
                                                                     checkpoint_copy: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match=rf"{LM_FILE}.*t5-small.*--text-encoder"):
        convert_checkpoint(checkpoint_copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the cache audiocraft itself read the T5 from serves the converter too
    monkeypatch.setenv("HF_HUB_CACHE", str(reference["hf_home"] / "hub"))
    converted = convert_checkpoint(checkpoint_copy, tmp_path / "out")
    assert (converted.directory / "config.json").is_file()


def _edit_package(path: Path, edit) -> None:
    package = torch.load(path, weights_only=True)
    edit(package)
    torch.save(package, path)


def _set_conditioner_lut(package: dict) -> None:
    package["xp.cfg"] = package["xp.cfg"].replace("model: t5", "model: lut")


def _add_melody_conditioner(package: dict) -> None:
    package["xp.cfg"] = package["xp.cfg"].replace("prepend: []", "prepend:\n  - self_wav")


def _drop_a_weight(package: dict) -> None:
    package["best_state"].pop("linears.3.weight")


def _magnet(package: dict) -> None:
    package["xp.cfg"] = package["xp.cfg"].replace("lm_model: transformer_lm", "lm_model: transformer_lm_magnet")


def _biased_attention(package: dict) -> None:
    package["xp.cfg"] = package["xp.cfg"].replace("bias_attn: false", "bias_attn: true")


@pytest.mark.parametrize(("edit", "message"), [
    (_set_conditioner_lut, "'lut'.*T5 only"),
    (_add_melody_conditioner, "melody"),
    (_magnet, "transformer_lm_magnet"),
    (_biased_attention, "bias_attn=True"),
    (_drop_a_weight, "missing decoder.lm_heads.3.weight"),
])
@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_other_architectures_are_refused_naming_the_file(reference: dict[str, Path], checkpoint_copy: Path,
                                                         edit, message: str) -> None:
    from musicops.training.run import import_audiocraft_checkpoint

    _edit_package(checkpoint_copy / LM_FILE, edit)
    with pytest.raises(ModelLoadError, match=rf"{checkpoint_copy / LM_FILE}: .*{message}"):
        import_audiocraft_checkpoint(checkpoint_copy, "ac-tiny", text_encoder=reference["text_encoder"])
    assert registered_models() == []


@pytest.mark.slow  # the audiocraft venv builds the reference checkpoint
def test_codec_file_in_the_lm_slot_is_refused(reference: dict[str, Path], checkpoint_copy: Path) -> None:
    from musicops.training.run import import_audiocraft_checkpoint

    shutil.copy(checkpoint_copy / CODEC_FILE, checkpoint_copy / LM_FILE)
    with pytest.raises(ModelLoadError, match=rf"{LM_FILE}: holds EnCodec weights, not the MusicGen LM"):
        import_audiocraft_checkpoint(checkpoint_copy, "ac-tiny", text_encoder=reference["text_encoder"])
    assert registered_models() == []


# ---- missing and corrupt files need no audiocraft: these run everywhere
def _fake_export(directory: Path) -> Path:
    directory.mkdir()
    (directory / LM_FILE).write_bytes(b"")
    (directory / CODEC_FILE).write_bytes(b"")
    return directory


@pytest.mark.slow  # ~7-10 s each
@pytest.mark.parametrize("broken", [LM_FILE, CODEC_FILE])
def test_missing_file_is_named_and_nothing_registered(tmp_path: Path, broken: str, state_home: Path) -> None:
    from musicops.training.run import import_audiocraft_checkpoint

    export = tmp_path / "export"
    export.mkdir()
    good = {"best_state": {"emb.0.weight": torch.zeros(2, 2)}, "xp.cfg": "lm_model: transformer_lm\n",
            "version": "1.3.0", "exported": True}
    for name in (LM_FILE, CODEC_FILE):
        if name != broken:
            torch.save(good, export / name)
    with pytest.raises(ModelLoadError, match=rf"{export / broken}: missing"):
        import_audiocraft_checkpoint(export, "ac-tiny")
    assert registered_models() == []
    assert not (state_home / "imports").exists() or not any((state_home / "imports").iterdir())


@pytest.mark.slow  # ~7-10 s each
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", os.urandom(4096)])
def test_corrupt_file_is_named_and_nothing_registered(tmp_path: Path, content: bytes) -> None:
    from musicops.training.run import import_audiocraft_checkpoint

    export = _fake_export(tmp_path / "export")
    (export / LM_FILE).write_bytes(content)
    with pytest.raises(ModelLoadError, match=rf"{export / LM_FILE}: corrupt or not a torch checkpoint"):
        import_audiocraft_checkpoint(export, "ac-tiny")
    assert registered_models() == []


@pytest.mark.slow  # ~7-10 s each
def test_cli_names_the_file_and_exits_2(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    done = subprocess.run([str(Path(sys.executable).with_name("musicops")), "models", "import-audiocraft", str(export),
                           "--name", "ac-tiny"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2
    assert f"{export / LM_FILE}: missing" in done.stdout + done.stderr


def test_config_interpolations_resolve() -> None:
    cfg = parse_config(Path("x"), "sample_rate: 32000\nencodec:\n  sample_rate: ${sample_rate}\n"
                                  "  other: ${nowhere.to_be_found}\n")
    assert cfg["encodec"]["sample_rate"] == 32000
    assert cfg["encodec"]["other"] == "${nowhere.to_be_found}"
