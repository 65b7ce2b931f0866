"""`musicops demo`: the whole loop on embedded defaults, no flags needed.

synth dataset -> kfp.local pipeline (ingest -> validate -> fine-tune -> register) -> generate two
clips from the registered version (post-processed, checked, stored with provenance) -> print where
everything is.
"""

from __future__ import annotations

import time

import typer

from musicops.cli.common import console, fail


def demo(
    clips: int = typer.Option(12, help="Synthetic dataset size."),
    steps: int = typer.Option(20, help="Fine-tuning steps."),
    duration: float = typer.Option(2.0, help="Seconds per generated clip."),
    seed: int = typer.Option(0),
) -> None:
    """Run the end-to-end demo on the tiny model, local kfp, sqlite MLflow and offline W&B."""
    from rich.table import Table

    from musicops.config import get_settings
    from musicops.datasets.manifest import latest_version
    from musicops.datasets.synth import synthesize
    from musicops.generation.batch import BatchOptions, cli_items, deliver, run_batch
    from musicops.models.tiny import TINY_NOTICE
    from musicops.pipelines.local import run_local
    from musicops.registry import configure_mlflow

    started = time.perf_counter()
    settings = get_settings().ensure()
    console.rule("musicops demo")
    console.print(f"state directory: {settings.home}")
    console.print(f"[yellow]note:[/] {TINY_NOTICE}")
    data_dir = settings.home / "demo" / f"synth-n{clips}-s{seed}"
    if not (data_dir / "metadata.jsonl").is_file():
        with console.status(f"synthesizing {clips} clips"):
            synthesize(data_dir, n=clips, seed=seed)
    console.print(f"[green]1/3[/] synthetic dataset: {data_dir}")

    name = settings.registered_model_name
    with console.status("running the fine-tune pipeline with kfp.local (ingest, validate, fine-tune, register)"):
        try:
            version = run_local("fine-tune", {
                "source_dir": str(data_dir), "dataset_name": "demo-synth", "base_model": "musicgen-tiny",
                "registered_name": name, "steps": steps, "seed": seed,
                "mlflow_tracking_uri": settings.mlflow_tracking_uri,
            }, settings)
        except RuntimeError as exc:
            fail(f"pipeline failed: {exc}")
    console.print(f"[green]2/3[/] registered models:/{name}/{version}")

    from mlflow import MlflowClient

    configure_mlflow(settings)
    model_version = MlflowClient().get_model_version(name, str(version))
    prompts = ["calm ambient pad in A minor at 80 BPM", "upbeat pop groove with drums and bass at 120 BPM"]
    result = run_batch("<demo>", f"models:/{name}/{version}", BatchOptions(),
                       settings=settings, items=cli_items(prompts, duration, seed))
    delivered = deliver(result, settings.home / "demo" / "clips" / f"v{version}", settings)
    console.print(f"[green]3/3[/] generated {len(result.outcomes)} clips from models:/{name}/{version} "
                  f"({len(result.failed)} failed quality checks)")

    manifest = latest_version("demo-synth", settings)
    table = Table(title="where everything is", show_lines=False)
    table.add_column("what", no_wrap=True)
    table.add_column("where", overflow="fold")
    table.add_row("manifest", str(manifest.path))
    table.add_row("validation report", str(manifest.directory / "report.html"))
    table.add_row("MLflow store", settings.mlflow_tracking_uri)
    table.add_row("MLflow run", f"{model_version.run_id} (experiment {settings.experiment})")
    table.add_row("model version", f"models:/{name}/{version}  tags: "
                  + ", ".join(f"{k}={v}" for k, v in sorted(model_version.tags.items()) if "hash" in k or "base" in k))
    table.add_row("kfp pipeline root", str(settings.kfp_root))
    table.add_row("W&B (offline)", str(settings.wandb_dir))
    table.add_row("asset store", str(settings.assets_dir))
    table.add_row("provenance db", settings.database_url)
    for outcome in result.outcomes:
        table.add_row("asset", f"{outcome.record.asset_id} ({outcome.record.duration_s:.2f}s, "
                      f"{outcome.record.loudness_after or float('nan'):.1f} LUFS): musicops assets show {outcome.record.asset_id}")
    for path in delivered:
        table.add_row("audio", str(path))
    console.print(table)
    console.print(f"done in {time.perf_counter() - started:.1f}s. Browse runs: "
                  f"mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
