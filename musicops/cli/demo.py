"""`musicops demo`: the whole loop on embedded defaults, no flags needed (see musicops.demo_loop).

The console gets one line per stage and per pipeline step, the gates, where everything is and the
served asset's audit record in brief (under 60 lines); library chatter on stderr (MLflow, progress
bars) and the full audit record go to files in `<state>/demo/`, named at the end.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import typer

from musicops.cli.common import console, fail


def demo(
    clips: int = typer.Option(12, help="Synthetic dataset size."),
    steps: int = typer.Option(20, help="Fine-tuning steps."),
    seed: int = typer.Option(0),
) -> None:
    """Fine-tune, batch-generate, evaluate, gate, promote, serve and audit, all on this machine."""
    import json
    import logging

    from musicops.config import get_settings
    from musicops.demo_loop import run_demo
    from musicops.models.tiny import TINY_NOTICE

    started = time.perf_counter()
    settings = get_settings().ensure()
    out = settings.home / "demo"
    out.mkdir(parents=True, exist_ok=True)

    def line(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    console.rule("musicops demo")
    line(f"state directory: {settings.home}")
    console.print(f"[yellow]note:[/] {TINY_NOTICE}", soft_wrap=True)
    step = iter(range(1, 100))
    chatter = out / "demo.log"
    with chatter.open("w") as log, contextlib.redirect_stderr(log):
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines are about table creation
        try:
            result = run_demo(settings, lambda text: console.print(f"[green]{next(step)}.[/] {text}", soft_wrap=True),
                              clips=clips, steps=steps, seed=seed, detail=lambda text: line(f"   {text}"))
        except RuntimeError as exc:
            log.flush()
            failure: str | None = str(exc)
        else:
            failure = None
    if failure is not None:
        from rich.markup import escape

        fail(escape(f"demo failed: {failure} (library output: {chatter})"))
    console.rule(f"release gates for {result.candidate}")
    for gate in result.gates:
        detail = gate["detail"] if len(gate["detail"]) <= 110 else gate["detail"][:107] + "..."
        line(f"{gate['gate']:<11} {gate['status']:<8} {detail}")
    console.rule("where everything is")
    rows = [
        ("dataset", str(result.dataset_dir)), ("manifest", result.manifest),
        ("MLflow store", settings.mlflow_tracking_uri), ("candidate", result.candidate),
        ("champion", f"v{result.champion_before} -> v{result.champion_after}"
                     + (" (promoted)" if result.promoted else " (not promoted)")),
        ("batch", f"{result.batch_id}: musicops assets list --batch {result.batch_id}"),
        ("release report", str(result.report_dir / "release.html") if result.report_dir else "-"),
        ("asset store", str(settings.assets_dir)), ("provenance db", settings.database_url),
        ("kfp runs", f"{settings.kfp_root / 'runs'} (pipeline.yaml, executor.log, run.json each)"),
        ("W&B (offline)", str(settings.wandb_dir)), ("library output", str(chatter)),
    ]
    for what, where in rows:
        line(f"{what:<16} {where}")
    audit_path = out / "audit.json"
    audit_path.write_text(json.dumps(result.audit, indent=2, default=str))
    console.rule("audit record of the served asset")
    for what, value in _audit_summary(result.audit):
        line(f"{what:<16} {value}")
    line(f"{'full record':<16} {audit_path}")
    line(f"done in {time.perf_counter() - started:.1f}s. Browse runs: "
         f"mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")


def _audit_summary(audit: dict[str, Any]) -> list[tuple[str, str]]:
    """The fields someone checking provenance looks at first."""
    asset = audit.get("asset", {})
    checks = asset.get("checks", [])
    return [
        ("asset", str(asset.get("asset_id", "?"))),
        ("prompt / seed", f"{asset.get('prompt', '?')!r} / {asset.get('seed', '?')}"),
        ("model", str(asset.get("model_uri", "?"))),
        ("wav sha256", str(asset.get("sha256", "?"))),
        ("user / batch", f"{asset.get('user', '?')} / {asset.get('batch_id', '?')}"),
        ("checks", f"{sum(bool(c.get('passed')) for c in checks)}/{len(checks)} passed"),
        ("created", str(asset.get("created_at", "?"))),
    ]
