"""The fine-tuning loop: loss falls, checkpoints resume exactly, mismatched checkpoints refused."""

from __future__ import annotations

import pytest
import torch

from musicops.models.musicgen import TransformersMusicGen
from musicops.training.checkpoint import list_checkpoints
from musicops.training.data import EncodedDataset, delay_pattern_labels
from musicops.training.finetune import CheckpointMismatchError, FineTuneConfig, train

CAPTIONS = ["calm piano in C major", "sad guitar in A minor", "epic drums at 140 BPM", "dreamy pad"]


def fixed_batch() -> EncodedDataset:
    codes = torch.randint(0, 2048, (4, 4, 25), generator=torch.Generator().manual_seed(0))
    return EncodedDataset(list(CAPTIONS), codes, ["synthetic"] * 4)


def trainable(model: TransformersMusicGen) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.model.named_parameters() if p.requires_grad}


def test_delay_pattern_labels_shift_each_codebook() -> None:
    codes = torch.arange(2 * 4 * 3).reshape(2, 4, 3)
    labels = delay_pattern_labels(codes, pad_token_id=2048)
    assert labels.shape == (2, 3 + 4 - 1, 4)
    for k in range(4):
        assert torch.equal(labels[:, k:k + 3, k], codes[:, k, :])
        assert (labels[:, :k, k] == 2048).all() and (labels[:, k + 3:, k] == 2048).all()


def test_loss_falls_on_a_fixed_batch() -> None:
    model = TransformersMusicGen.from_preset()
    result = train(model, fixed_batch(), FineTuneConfig(steps=20, learning_rate=3e-3, cond_dropout=0.0))
    assert len(result.losses) == 20
    assert sum(result.losses[-3:]) / 3 < 0.8 * result.losses[0], result.losses


def test_only_the_decoder_is_trained() -> None:
    model = TransformersMusicGen.from_preset()
    text_before = {n: p.clone() for n, p in model.model.text_encoder.named_parameters()}
    train(model, fixed_batch(), FineTuneConfig(steps=2, cond_dropout=0.0))
    assert all(torch.equal(p, text_before[n]) for n, p in model.model.text_encoder.named_parameters())


class Crash(RuntimeError):
    pass


def test_resume_after_crash_matches_an_uninterrupted_run(tmp_path) -> None:
    config = FineTuneConfig(steps=8, checkpoint_every=3, cond_dropout=0.5, seed=1)
    reference = TransformersMusicGen.from_preset()
    expected = train(reference, fixed_batch(), config)

    def crash_at_5(step: int, _metrics: dict[str, float]) -> None:
        if step == 5:
            raise Crash("simulated crash")

    crashed = TransformersMusicGen.from_preset()
    with pytest.raises(Crash):
        train(crashed, fixed_batch(), config, checkpoint_dir=tmp_path, on_step=crash_at_5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003.pt"]

    resumed_model = TransformersMusicGen.from_preset()
    resumed = train(resumed_model, fixed_batch(), config, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 3
    assert resumed.losses == pytest.approx(expected.losses, rel=1e-5)
    want, got = trainable(reference), trainable(resumed_model)
    assert all(torch.allclose(want[n], got[n], atol=1e-6) for n in want)


def test_checkpoint_of_another_run_is_refused(tmp_path) -> None:
    train(TransformersMusicGen.from_preset(), fixed_batch(), FineTuneConfig(steps=2, checkpoint_every=1),
          checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="different run"):
        train(TransformersMusicGen.from_preset(), fixed_batch(),
              FineTuneConfig(steps=2, checkpoint_every=1, learning_rate=0.5), checkpoint_dir=tmp_path)


def test_lora_trains_adapters_and_merges_back() -> None:
    model = TransformersMusicGen.from_preset()
    before = trainable(model)
    result = train(model, fixed_batch(), FineTuneConfig(steps=3, lora=True, learning_rate=1e-2, cond_dropout=0.0))
    assert type(model.model).__name__ == "MusicgenForConditionalGeneration"  # merged, loads like any other
    after = dict(model.model.named_parameters())
    changed = [n for n in before if "q_proj" in n and not torch.equal(before[n], after[n])]
    assert changed, "merged LoRA deltas must change the attention projections"
    assert len(result.losses) == 3


def test_stereo_labels_follow_transformers_delay_pattern() -> None:
    """Stereo interleaves left/right codebooks; both channels' codebook j are delayed j steps. The labels
    fill exactly the positions transformers' delay pattern leaves for generated tokens."""
    model = TransformersMusicGen.from_preset("musicgen-stereo-tiny")
    decoder, pad = model.model.decoder, int(model.model.generation_config.pad_token_id)
    books, frames = decoder.config.num_codebooks, 6
    codes = torch.randint(0, pad, (1, books, frames))
    labels = delay_pattern_labels(codes, pad, audio_channels=2)
    start = torch.full((books, 1), pad, dtype=torch.long)
    _, pattern = decoder.build_delay_pattern_mask(start, pad_token_id=pad, max_length=labels.shape[1] + 1)
    assert torch.equal(labels[0].T.ne(pad), pattern[:, 1:].eq(-1))
    assert delay_pattern_labels(codes, pad).shape[1] == frames + books - 1  # mono reading: wrong for stereo
    with pytest.raises(ValueError, match="cannot be split"):
        delay_pattern_labels(torch.zeros((1, 3, 2), dtype=torch.long), pad, audio_channels=2)


def test_stereo_manifest_audio_is_encoded_per_channel_and_interleaved(tmp_path) -> None:
    import numpy as np
    import soundfile as sf

    from musicops.models.continuation import encode_audio
    from musicops.training.data import encode_manifest, load_segment

    model = TransformersMusicGen.from_preset("musicgen-stereo-tiny")
    t = np.arange(32000) / 32000
    path = tmp_path / "stereo.wav"
    sf.write(path, 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1), 32000)
    encoded = encode_manifest(model, [{"caption": "two tones", "path": str(path)}], 1.0)
    assert encoded.codes.shape == (1, model.model.decoder.config.num_codebooks, 50)
    segment = load_segment(path, model.sample_rate, 1.0, channels=2)
    assert segment.shape == (32000, 2)
    assert torch.equal(encoded.codes[0], encode_audio(model.model.audio_encoder, segment, 32000, 2).long())
