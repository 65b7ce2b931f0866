"""`musicops pipelines ...`: run locally with kfp.local or compile IR YAML for a cluster.

`run` prints one line per step as it finishes (status, seconds, key outputs); kfp's executor logs go to
`executor.log` in the run folder. `--json` prints one JSON document instead; the exit code is 0 on
success, 1 when a step failed, 2 for bad arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from musicops.cli.common import console, fail

app = typer.Typer(no_args_is_help=True)
run_app = typer.Typer(no_args_is_help=True, help="Run a pipeline locally (kfp.local SubprocessRunner).")
app.add_typer(run_app, name="run")

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document (steps, output, log path) instead.")


def _run(name: str, arguments: dict[str, Any], as_json: bool) -> Any:
    """Run and report; returns the pipeline's output, or exits 1 naming the failed step and its log."""
    from musicops.config import get_settings
    from musicops.pipelines.local import PipelineFailed, run_pipeline

    settings = get_settings()
    arguments = {"mlflow_tracking_uri": settings.mlflow_tracking_uri, **arguments}
    say = None if as_json else (lambda step: console.print(step.line(), markup=False, highlight=False,
                                                           soft_wrap=True))
    if not as_json:
        console.print(f"pipeline {name} (kfp.local); steps as they finish:", highlight=False)
    try:
        run = run_pipeline(name, arguments, settings, on_step=say)
    except PipelineFailed as exc:
        if as_json:
            print(json.dumps(exc.run.to_dict(), default=str))
            raise typer.Exit(1) from None
        from rich.markup import escape

        fail(escape(f"pipeline {name} failed: {exc}"))
    if as_json:
        print(json.dumps(run.to_dict(), default=str))
    else:
        console.print(f"log: {run.log_path}", highlight=False, soft_wrap=True)
    return run.output


@run_app.command("fine-tune")
def run_fine_tune(
    source_dir: Path = typer.Argument(..., help="Folder of audio files with captions (metadata.jsonl)."),
    dataset_name: str = typer.Option("dataset", "--dataset-name"),
    base_model: str = typer.Option("musicgen-tiny", "--base-model"),
    registered_name: str = typer.Option("", "--registered-name", help="Default: MUSICOPS_MODEL_NAME."),
    steps: int = typer.Option(20), batch_size: int = typer.Option(4), learning_rate: float = typer.Option(
        0.0, help="AdamW learning rate; 0 (default) picks it by decoder size (1e-3 toy, 1e-5 MusicGen-small)."),
    segment_s: float = typer.Option(2.0), seed: int = typer.Option(0),
    as_json: bool = JSON_OPTION,
) -> None:
    """ingest -> validate -> fine-tune -> register, each step a kfp component run locally."""
    from musicops.config import get_settings

    if not source_dir.is_dir():
        fail(f"{source_dir}: not a directory", 2)
    name = registered_name or get_settings().registered_model_name
    version = _run("fine-tune", {
        "source_dir": str(source_dir.resolve()), "dataset_name": dataset_name, "base_model": base_model,
        "registered_name": name, "steps": steps, "batch_size": batch_size,
        "learning_rate": learning_rate, "segment_s": segment_s, "seed": seed,
    }, as_json)
    if not as_json:
        console.print(f"[green]registered[/] models:/{name}/{version}")


@run_app.command("batch-generate")
def run_batch_generate(
    prompts_file: Path = typer.Argument(..., help="JSONL or CSV prompts file."),
    model: str = typer.Option("musicgen-tiny", help="Model reference (alias resolved once, at the start)."),
    batch_size: int = typer.Option(8), shard_size: int = typer.Option(16),
    no_cache: bool = typer.Option(False, "--no-cache"),
    precision: str = typer.Option("fp32", help="Decoder precision: fp32, bf16 or int8."),
    as_json: bool = JSON_OPTION,
) -> None:
    """plan -> ParallelFor(shards: generate -> post-process -> store) -> summary, with kfp.local."""
    if not prompts_file.is_file():
        fail(f"{prompts_file}: not a file", 2)
    batch_id = _run("batch-generate", {
        "prompts_file": str(prompts_file.resolve()), "model_ref": model, "batch_size": batch_size,
        "shard_size": shard_size, "no_cache": no_cache, "precision": precision,
    }, as_json)
    if not as_json:
        console.print(f"[green]batch[/] {batch_id} done; `musicops assets list --batch {batch_id}` shows its assets")


@app.command("compile")
def compile_cmd(
    out_dir: Path = typer.Argument(..., help="Folder for one IR YAML per pipeline."),
    image: str = typer.Option("", "--image", help="Container image of every step (default MUSICOPS_KFP_IMAGE "
                                                  "or musicops:<version>)."),
    gpu: int = typer.Option(0, "--gpu", min=0, help="Accelerators per model step (train, generate, evaluate)."),
    gpu_type: str = typer.Option("nvidia.com/gpu", "--gpu-type", help="Accelerator resource name."),
    node_selector: list[str] = typer.Option([], "--node-selector", help="LABEL=VALUE for the model steps' pods "
                                                                        "(repeatable)."),
    secret: list[str] = typer.Option([], "--secret", help="Kubernetes secret whose keys (MLFLOW_TRACKING_URI, "
                                                          "MUSICOPS_DATABASE_URL, AWS_*, ...) become every "
                                                          "step's environment (repeatable)."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE task environment for every step, e.g. "
                                                    "MUSICOPS_HOME=/mnt/state (repeatable)."),
    only: list[str] = typer.Option([], "--pipeline", help="Compile only this pipeline (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print {written: [...], options: {...}} as JSON."),
) -> None:
    """Write kfp IR YAML for every pipeline (upload them to a Kubeflow Pipelines cluster)."""
    from dataclasses import asdict

    from musicops.pipelines.catalog import PIPELINES
    from musicops.pipelines.compile import compile_all
    from musicops.pipelines.profile import Profile, parse_pairs

    unknown = [name for name in only if name not in PIPELINES]
    if unknown:
        fail(f"unknown pipeline {', '.join(unknown)}; known: {', '.join(sorted(PIPELINES))}", 2)
    try:
        profile = Profile(image=image or None, gpu=gpu, gpu_type=gpu_type,
                          node_selector=parse_pairs(node_selector, "--node-selector"), secrets=tuple(secret),
                          env=parse_pairs(env, "--env"))
    except ValueError as exc:
        fail(str(exc), 2)
    written = compile_all(out_dir, profile, only or None)
    if as_json:
        print(json.dumps({"written": [str(path) for path in written], "options": asdict(profile)}))
        return
    for path in written:
        console.print(str(path), highlight=False, soft_wrap=True)
