"""The compiled IR YAML is what runs: compile options land in it, no host path does, and the YAML loaded
back from disk runs under kfp.local with its state outside the repository."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from musicops.cli import app
from musicops.config import get_settings

REPO = Path(__file__).resolve().parents[2]
MODEL_EXECUTORS = {"batch-generate": "exec-generate-shard", "fine-tune": "exec-fine-tune-model"}


def _compile(out: Path, *options: str) -> dict[str, list[dict[str, Any]]]:
    result = CliRunner().invoke(app, ["pipelines", "compile", str(out), "--json", *options])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)["written"]
    return {Path(path).stem: list(yaml.safe_load_all(Path(path).read_text())) for path in written}


def _host_paths(tmp_path: Path) -> list[str]:
    """Paths of this machine that must never be baked into a YAML."""
    return [str(REPO), str(tmp_path), str(Path.home()), sys.prefix, str(get_settings().home.resolve())]


def test_compile_options_land_in_the_yaml_and_only_where_asked(tmp_path) -> None:
    plain = _compile(tmp_path / "plain")
    for name, documents in plain.items():
        assert len(documents) == 1, f"{name}: no Kubernetes platform spec without options"
        executors = documents[0]["deploymentSpec"]["executors"]
        assert all("accelerator" not in e["container"].get("resources", {}) for e in executors.values())
        assert all("env" not in e["container"] for e in executors.values())

    dressed = _compile(tmp_path / "dressed", "--image", "registry.example/musicops:9", "--gpu", "2",
                       "--node-selector", "pool=gpu", "--secret", "musicops-env", "--env", "MUSICOPS_HOME=/mnt/state")
    for name, (spec, platform) in dressed.items():
        executors = spec["deploymentSpec"]["executors"]
        assert {e["container"]["image"] for e in executors.values()} == {"registry.example/musicops:9"}
        for executor in executors.values():
            assert {"name": "MUSICOPS_HOME", "value": "/mnt/state"} in executor["container"]["env"]
        kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert set(kube) == set(executors), f"{name}: every step gets the secret"
        for label, config in kube.items():
            assert config["secretAsEnv"][0]["secretName"] == "musicops-env"
            keys = {item["envVar"] for item in config["secretAsEnv"][0]["keyToEnv"]}
            assert {"MLFLOW_TRACKING_URI", "MUSICOPS_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} <= keys
            accelerator = executors[label]["container"].get("resources", {}).get("accelerator")
            if label == MODEL_EXECUTORS.get(name):
                assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "2"
                assert config["nodeSelector"] == {"labels": {"pool": "gpu"}}
            if label in {"exec-ingest-dataset", "exec-postprocess-shard", "exec-register-model-version"}:
                assert accelerator is None and "nodeSelector" not in config, f"{label}: no GPU for a light step"
    for text in ((tmp_path / d / f).read_text() for d in ("plain", "dressed") for f in os.listdir(tmp_path / d)):
        assert not [p for p in _host_paths(tmp_path) if p in text]


def test_caching_is_chosen_per_step(tmp_path) -> None:
    """Only post-processing (a pure function of its input artifacts) may be served from kfp's cache."""
    from musicops.pipelines.compile import compile_pipeline

    spec = yaml.safe_load(compile_pipeline("batch-generate", tmp_path / "batch.yaml").read_text())
    loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert loop["postprocess-shard"]["cachingOptions"] == {"enableCache": True}
    assert loop["generate-shard"]["cachingOptions"] == {} and loop["store-shard"]["cachingOptions"] == {}
    assert spec["root"]["dag"]["tasks"]["plan-batch-step"]["cachingOptions"] == {}
    fine_tune = yaml.safe_load(compile_pipeline("fine-tune", tmp_path / "ft.yaml").read_text())
    assert all(task["cachingOptions"] == {} for task in fine_tune["root"]["dag"]["tasks"].values())


def test_compile_rejects_bad_options(tmp_path) -> None:
    runner = CliRunner()
    bad_pair = runner.invoke(app, ["pipelines", "compile", str(tmp_path), "--node-selector", "pool"])
    assert bad_pair.exit_code == 2 and "KEY=VALUE" in bad_pair.output
    unknown = runner.invoke(app, ["pipelines", "compile", str(tmp_path), "--pipeline", "nope"])
    assert unknown.exit_code == 2 and "unknown pipeline nope" in unknown.output
    assert not list(tmp_path.glob("*.yaml"))


@pytest.mark.slow  # runs a kfp.local pipeline
def test_compiled_batch_yaml_runs_from_disk_with_state_outside_the_repository(tmp_path, state_home) -> None:
    from musicops.pipelines.local import run_compiled
    from musicops.store.assets import open_asset_store
    from musicops.store.provenance import ProvenanceDB

    assert not state_home.resolve().is_relative_to(REPO) and not tmp_path.resolve().is_relative_to(REPO)
    documents = _compile(tmp_path / "out", "--pipeline", "batch-generate", "--image", "registry.example/musicops:9")
    assert list(documents) == ["batch-generate"]
    path = tmp_path / "out" / "batch-generate.yaml"
    assert not [p for p in _host_paths(tmp_path) if p in path.read_text()]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "calm ambient pad", "duration_s": 1.0, "n_variations": 2}))

    handlers = logging.getLogger().handlers[:]
    # no musicops_home argument: the steps find the state directory in their environment (MUSICOPS_HOME)
    run = run_compiled(path, {"prompts_file": str(prompts), "shard_size": 1}, pipeline_root=tmp_path / "root",
                       log_path=tmp_path / "root" / "executor.log")

    assert [step.task for step in run.steps if step.status != "ok"] == []
    assert logging.getLogger().handlers == handlers, "no handler bound to the run's log is left behind"
    assert {step.task for step in run.steps} == {"plan-batch-step", "generate-shard", "postprocess-shard",
                                                 "store-shard", "summarize-batch"}
    settings = get_settings()
    db = ProvenanceDB.from_settings(settings)
    try:
        records = db.list_assets(run.output)
    finally:
        db.close()
    assert len(records) == 2 and all(r.passed for r in records)
    store = open_asset_store(settings)
    assert all(store.exists(r.sha256, "wav") for r in records)
    # the audio a step hands on lives inside its artifact (a directory), never beside it
    raw_dirs = list((tmp_path / "root").rglob("raw"))
    assert raw_dirs and all((d / "audio.npz").is_file() and (d / "meta.json").is_file() for d in raw_dirs)
    assert not list((tmp_path / "root").rglob("*.npz.npz")) and not list((tmp_path / "root").rglob("raw.npz"))
    assert "Executing task" in (tmp_path / "root" / "executor.log").read_text()
