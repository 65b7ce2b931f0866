"""One readable line per step: what `musicops pipelines run` and `make demo` print."""

from __future__ import annotations

from kfp import dsl

from musicops.pipelines.local import StepRecord, _key_outputs


def test_step_line_shows_parameters_then_metrics_without_repeats() -> None:
    metrics = dsl.Metrics(name="metrics", metadata={"first_loss": 7.1, "final_loss": 6.23456})
    model = dsl.Model(name="model", metadata={"run_id": "abc", "model_uri": "models:/m-1", "tags": {"a": 1}})
    outputs = _key_outputs({"run_id": "abc", "model": model, "metrics": metrics})
    assert list(outputs) == ["run_id", "metrics.first_loss", "metrics.final_loss", "model.model_uri"]
    assert outputs["metrics.final_loss"] == "6.235"
    line = StepRecord("fine-tune-model", "ok", 3.04, outputs).line()
    assert line.split()[:3] == ["fine-tune-model", "ok", "3.0s"] and "model.run_id" not in line


def test_long_values_and_lines_are_cut() -> None:
    outputs = _key_outputs({"Output": "x" * 200})
    assert len(outputs["Output"]) == 48 and outputs["Output"].endswith("...")
    line = StepRecord("store-shard", "failed", 1.0, {f"k{i}": "v" * 40 for i in range(10)}).line(width=100)
    assert len(line) == 100 and line.endswith("...") and line.split()[1] == "failed"
