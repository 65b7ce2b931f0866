"""`musicops demo`: the whole loop on embedded defaults, no flags needed (see musicops.demo_loop)."""

from __future__ import annotations

import time

import typer

from musicops.cli.common import console, fail


def demo(
    clips: int = typer.Option(12, help="Synthetic dataset size."),
    steps: int = typer.Option(20, help="Fine-tuning steps."),
    seed: int = typer.Option(0),
) -> None:
    """Fine-tune, batch-generate, evaluate, gate, promote, serve and audit, all on this machine."""
    import json

    from rich.table import Table

    from musicops.config import get_settings
    from musicops.demo_loop import run_demo
    from musicops.models.tiny import TINY_NOTICE

    started = time.perf_counter()
    settings = get_settings().ensure()
    console.rule("musicops demo")
    console.print(f"state directory: {settings.home}")
    console.print(f"[yellow]note:[/] {TINY_NOTICE}")
    step = iter(range(1, 100))
    try:
        result = run_demo(settings, lambda text: console.print(f"[green]{next(step)}.[/] {text}"),
                          clips=clips, steps=steps, seed=seed)
    except RuntimeError as exc:
        fail(f"demo failed: {exc}")
    gates = Table(title=f"release gates for {result.candidate}")
    for column in ("gate", "status", "detail"):
        gates.add_column(column, overflow="fold")
    for gate in result.gates:
        gates.add_row(gate["gate"], gate["status"], gate["detail"][:200])
    console.print(gates)
    table = Table(title="where everything is")
    table.add_column("what", no_wrap=True)
    table.add_column("where", overflow="fold")
    rows = [
        ("dataset", str(result.dataset_dir)), ("manifest", result.manifest),
        ("MLflow store", settings.mlflow_tracking_uri), ("candidate", result.candidate),
        ("champion", f"v{result.champion_before} -> v{result.champion_after}"
                     + (" (promoted)" if result.promoted else " (not promoted)")),
        ("batch", f"{result.batch_id}: musicops assets list --batch {result.batch_id}"),
        ("release report", str(result.report_dir / "release.html") if result.report_dir else "-"),
        ("asset store", str(settings.assets_dir)), ("provenance db", settings.database_url),
        ("kfp pipeline root", str(settings.kfp_root)), ("W&B (offline)", str(settings.wandb_dir)),
    ]
    for what, where in rows:
        table.add_row(what, where)
    console.print(table)
    console.rule("audit record of the served asset")
    console.print_json(json.dumps(result.audit, default=str))
    console.print(f"done in {time.perf_counter() - started:.1f}s. Browse runs: "
                  f"mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
