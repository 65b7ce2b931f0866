"""`musicops pipelines ...`: run locally with kfp.local or compile IR YAML for a cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from musicops.cli.common import console, fail

app = typer.Typer(no_args_is_help=True)
run_app = typer.Typer(no_args_is_help=True, help="Run a pipeline locally (kfp.local SubprocessRunner).")
app.add_typer(run_app, name="run")


@run_app.command("fine-tune")
def run_fine_tune(
    source_dir: Path = typer.Argument(..., help="Folder of audio files with captions (metadata.jsonl)."),
    dataset_name: str = typer.Option("dataset", "--dataset-name"),
    base_model: str = typer.Option("musicgen-tiny", "--base-model"),
    registered_name: str = typer.Option("", "--registered-name", help="Default: MUSICOPS_MODEL_NAME."),
    steps: int = typer.Option(20), batch_size: int = typer.Option(4), learning_rate: float = typer.Option(1e-3),
    segment_s: float = typer.Option(2.0), seed: int = typer.Option(0),
) -> None:
    """ingest -> validate -> fine-tune -> register, each step a kfp component run locally."""
    from musicops.config import get_settings
    from musicops.pipelines.local import run_local

    settings = get_settings()
    if not source_dir.is_dir():
        fail(f"{source_dir}: not a directory", 2)
    name = registered_name or settings.registered_model_name
    try:
        version = run_local("fine-tune", {
            "source_dir": str(source_dir.resolve()), "dataset_name": dataset_name, "base_model": base_model,
            "registered_name": name, "steps": steps, "batch_size": batch_size,
            "learning_rate": learning_rate, "segment_s": segment_s, "seed": seed,
            "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        }, settings)
    except RuntimeError as exc:
        fail(f"pipeline failed: {exc}")
    console.print(f"[green]registered[/] models:/{name}/{version}")


@run_app.command("batch-generate")
def run_batch_generate(
    prompts_file: Path = typer.Argument(..., help="JSONL or CSV prompts file."),
    model: str = typer.Option("musicgen-tiny", help="Model reference (alias resolved once, at the start)."),
    batch_size: int = typer.Option(8), shard_size: int = typer.Option(16),
    no_cache: bool = typer.Option(False, "--no-cache"),
    precision: str = typer.Option("fp32", help="Decoder precision: fp32, bf16 or int8."),
) -> None:
    """plan -> ParallelFor(shards: generate -> post-process -> store) -> summary, with kfp.local."""
    from musicops.config import get_settings
    from musicops.pipelines.local import run_local

    settings = get_settings()
    if not prompts_file.is_file():
        fail(f"{prompts_file}: not a file", 2)
    try:
        batch_id = run_local("batch-generate", {
            "prompts_file": str(prompts_file.resolve()), "model_ref": model, "batch_size": batch_size,
            "shard_size": shard_size, "no_cache": no_cache, "mlflow_tracking_uri": settings.mlflow_tracking_uri,
            "precision": precision,
        }, settings)
    except RuntimeError as exc:
        fail(f"pipeline failed: {exc}")
    console.print(f"[green]batch[/] {batch_id} done; `musicops assets list --batch {batch_id}` shows its assets")


@app.command("compile")
def compile_cmd(out_dir: Path = typer.Argument(..., help="Folder for one IR YAML per pipeline.")) -> None:
    """Write kfp IR YAML for every pipeline (upload them to a Kubeflow Pipelines cluster)."""
    from musicops.pipelines.compile import compile_all

    for path in compile_all(out_dir):
        console.print(str(path))
