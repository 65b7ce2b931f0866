"""Training settings that follow the model's size, the memory estimate and the degenerate-codes check."""

from __future__ import annotations

import pytest
import torch

from musicops.models.musicgen import TransformersMusicGen
from musicops.training.finetune import FineTuneConfig
from musicops.training.planning import (
    decoder_parameters,
    default_learning_rate,
    degenerate_codes,
    estimate_memory,
)


def test_learning_rate_follows_the_decoder_size() -> None:
    assert default_learning_rate(549_440, lora=False) == 1e-3  # the tiny preset
    assert default_learning_rate(150_000_000, lora=False) == 1e-4
    assert default_learning_rate(420_000_000, lora=False) == 1e-5  # MusicGen-small's decoder
    assert default_learning_rate(3_300_000_000, lora=True) == 1e-4
    with pytest.raises(ValueError, match="optimizer"):
        FineTuneConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="learning rate"):
        FineTuneConfig(learning_rate=3.0)


def test_memory_estimate_counts_weights_gradients_states_and_activations() -> None:
    hf = TransformersMusicGen.from_preset().model
    n = decoder_parameters(hf)
    weights = sum(p.numel() * p.element_size() for p in hf.parameters())
    full = estimate_memory(hf, batch_size=4, frames=104, lora=False, optimizer="adamw", gradient_checkpointing=False)
    assert (full.weights, full.gradients, full.optimizer) == (weights, 4 * n, 8 * n)
    assert full.total == full.weights + full.gradients + full.optimizer + full.activations
    saver = estimate_memory(hf, batch_size=4, frames=104, lora=False, optimizer="adamw-8bit",
                            gradient_checkpointing=True)
    assert saver.optimizer == 2 * n and saver.activations < full.activations
    longer = estimate_memory(hf, batch_size=8, frames=208, lora=False, optimizer="adamw", gradient_checkpointing=False)
    assert longer.activations == 4 * full.activations
    assert "estimated peak memory" in full.describe() and "GiB" in full.describe()


def test_degenerate_codes_are_flagged_and_varied_codes_are_not() -> None:
    constant = torch.full((6, 4, 50), 7)
    constant[0, 2, 3] = 8
    warning = degenerate_codes(constant)
    assert warning is not None and "random weights or the audio is silent" in warning and "[1, 1, 2, 1]" in warning
    varied = torch.randint(0, 2048, (6, 4, 50), generator=torch.Generator().manual_seed(0))
    assert degenerate_codes(varied) is None


def test_fine_tune_reports_its_plan_before_training(tmp_path, synth_dir) -> None:
    from musicops.config import get_settings
    from musicops.datasets.ingest import ingest
    from musicops.training.run import fine_tune

    settings = get_settings(tmp_path / "home")
    version = ingest(synth_dir, "plan-set", settings).version
    seen: list[dict] = []
    steps: list[int] = []
    outcome = fine_tune(version.ref, "musicgen-tiny", FineTuneConfig(steps=2, segment_s=1.0, optimizer="adamw-fused",
                                                                     gradient_checkpointing=True),
                        settings, on_plan=lambda plan: seen.append(plan) or None,
                        on_step=lambda step, metrics: steps.append(step) or None)
    [plan] = seen
    assert plan["learning_rate"] == 1e-3 and plan["learning_rate_chosen"] is True
    assert plan["memory"].total > 0 and steps == [1, 2]
    assert all(loss == loss for loss in outcome.losses)  # finite under checkpointing and the fused optimiser
    from mlflow import MlflowClient

    assert MlflowClient().get_run(outcome.run_id).data.params["learning_rate"] == "0.001"
