"""The batch generation pipeline under kfp.local: ParallelFor over shards, then a cached rerun."""

from __future__ import annotations

import json

import pytest

from musicops.config import get_settings
from musicops.store.provenance import ProvenanceDB

pytestmark = pytest.mark.slow  # runs a kfp.local pipeline


def test_batch_pipeline_generates_then_hits_the_cache(tmp_path) -> None:
    from musicops.pipelines.local import run_local

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "calm ambient pad", "duration_s": 1.0, "seed": 3},
        {"prompt": "upbeat drums", "duration_s": 1.0, "n_variations": 2},
        {"prompt": "sad piano", "duration_s": 1.5},
    ]))
    settings = get_settings()
    arguments = {"prompts_file": str(prompts), "model_ref": "musicgen-tiny", "shard_size": 2,
                 "mlflow_tracking_uri": settings.mlflow_tracking_uri}
    first = run_local("batch-generate", arguments, settings)
    db = ProvenanceDB.from_settings(settings)
    try:
        records = db.list_assets(first)
        assert len(records) == 4 and all(r.passed for r in records)
        assert {r.model_uri for r in records} == {"musicgen-tiny"}
        second = run_local("batch-generate", arguments, settings)
        assert second != first
        assert db.count_assets() == 4, "the rerun must not add rows"
        assert db.get_batch(second).counts["n_cache_hits"] == 4
    finally:
        db.close()


def _output_artifacts(spec: dict) -> dict[str, set[str]]:
    """Task name -> the output artifact names its component declares (tasks inside ParallelFor too)."""
    components = spec["components"]
    tasks: dict[str, set[str]] = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in components.values() if "dag" in c]
    for dag in dags:
        for name, task in dag["tasks"].items():
            component = components[task["componentRef"]["name"]]
            tasks[name] = set(component.get("outputDefinitions", {}).get("artifacts", {}))
    return tasks


def _host_paths(value: object, key: str = "") -> list[str]:
    """Absolute paths that exist on this machine, anywhere in a JSON value (`prompts_file` excepted: the
    plan records where the prompts came from, for provenance; no step opens it after planning)."""
    from pathlib import Path

    if isinstance(value, dict):
        return [p for k, v in value.items() if k != "prompts_file" for p in _host_paths(v, k)]
    if isinstance(value, list):
        return [p for v in value for p in _host_paths(v, key)]
    return [value] if isinstance(value, str) and value.startswith("/") and Path(value).exists() else []


def test_every_file_a_step_hands_on_lies_inside_an_artifact_and_names_no_host_path(tmp_path) -> None:
    """What a cluster's launcher uploads is each output artifact's own path: a file beside it (the old
    `raw.path + ".npz"`) would be lost between pods. Walk the pipeline root after a run."""
    import yaml

    from musicops.pipelines.local import run_local

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "calm ambient pad", "duration_s": 0.5, "seed": 3},
        {"prompt": "upbeat drums", "duration_s": 0.5, "n_variations": 2}]))
    settings = get_settings()
    run_local("batch-generate", {"prompts_file": str(prompts), "model_ref": "musicgen-tiny", "shard_size": 2,
                                 "mlflow_tracking_uri": settings.mlflow_tracking_uri}, settings)
    (run,) = [p for p in (settings.kfp_root / "runs").iterdir() if (p / "pipeline.yaml").is_file()]
    artifacts = _output_artifacts(yaml.safe_load((run / "pipeline.yaml").read_text()))
    (root,) = [p for p in run.iterdir() if p.is_dir()]  # the pipeline run's root: one folder per task
    handed_on = []
    for path in (p for p in root.rglob("*") if p.is_file()):
        parts = path.relative_to(root).parts
        task = next(i for i, part in enumerate(parts) if part in artifacts)
        if parts[task + 1:] == ("executor_output.json",):
            continue  # kfp's own record of the step's outputs, not something a step reads
        assert len(parts) > task + 1 and parts[task + 1] in artifacts[parts[task]], \
            f"{path.relative_to(root)} is not inside an output artifact of {parts[task]}"
        handed_on.append(path)
    names = {p.name for p in handed_on}
    assert {"plan", "audio.npz", "meta.json"} <= names, names  # audio travels inside raw/ and processed/
    for path in handed_on:
        if path.suffix in (".json", "") and path.read_bytes()[:1] in (b"{", b"["):
            assert _host_paths(json.loads(path.read_text())) == [], path
