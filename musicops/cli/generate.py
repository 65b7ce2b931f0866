"""`musicops generate ...`: batch generation into the asset store, with provenance and cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from musicops.cli.common import console, err_console, fail

if TYPE_CHECKING:
    from collections.abc import Callable

    from musicops.generation.planning import BatchOptions  # imported when a command runs, not at CLI start

app = typer.Typer(no_args_is_help=True)


PRECISION_HELP = ("Decoder precision: fp32 (reference), bf16 or int8 (faster on CPU; different audio, so its "
                  "own cache entries; recorded in each asset's model_version as '#int8').")


WATERMARK_HELP = ("Watermark embedded in every delivered clip after post-processing: perth (PerthNet, runs offline, "
                  "no payload) or none (default: see docs/watermark.md). Recorded in provenance; perth assets get their "
                  "own cache keys.")


STEMS_HELP = ("Separate every delivered clip into drums/bass/other/vocals (demucs HTDemucs); each stem is an asset "
              "of its own linked to the clip (params stem_of/stem). The stems sum to the clip (residual in 'other'); "
              "not loudness-normalised, true-peak ceiling kept.")
SEPARATOR_HELP = ("Separator for --stems: htdemucs (published weights via the Hugging Face hub) or htdemucs-random "
                  "(same architecture, random init: runs offline, stems not musically meaningful).")


def _options(batch_size: int, no_cache: bool, target_lufs: float, ceiling: float, price: float | None,
             precision: str = "fp32", watermark: str = "none", stems: str = "none") -> BatchOptions:
    from musicops.audio.postprocess import PostProcessSettings
    from musicops.generation.planning import BatchOptions

    return BatchOptions(batch_size=batch_size, use_cache=not no_cache, price_per_hour=price, precision=precision,
                        watermark=watermark, stems=stems,
                        postprocess=PostProcessSettings(target_lufs=target_lufs, true_peak_dbtp=ceiling))


@app.command("batch")
def batch(
    prompts_file: Path = typer.Argument(..., help="JSONL or CSV: prompt, duration_s[, seed, n_variations, tags]."),
    model: str = typer.Option("musicgen-tiny", help="musicgen-tiny, a model dir, models:/NAME/VERSION or models:/NAME@ALIAS."),
    out: Path = typer.Option(None, help="Copy the assets that pass their checks here."),
    batch_size: int = typer.Option(8, help="Prompts per model call."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Generate even when the cache has the asset."),
    target_lufs: float = typer.Option(-14.0, help="Loudness target (LUFS)."),
    ceiling: float = typer.Option(-1.0, help="True-peak ceiling (dBTP)."),
    price: float = typer.Option(None, help="Accelerator price per hour for the cost metric."),
    precision: str = typer.Option("fp32", help=PRECISION_HELP),
    watermark: str = typer.Option("none", help=WATERMARK_HELP),
    stems: bool = typer.Option(False, "--stems", help=STEMS_HELP),
    separator: str = typer.Option("htdemucs", help=SEPARATOR_HELP),
) -> None:
    """Generate every prompt x variation of a prompts file (cache first, then the model)."""
    from musicops.audio.stems import SeparatorUnavailable
    from musicops.generation.batch import run_batch
    from musicops.generation.prompts import PromptsFileError
    from musicops.registry import ModelNotFoundError

    try:
        options = _options(batch_size, no_cache, target_lufs, ceiling, price, precision, watermark,
                           separator if stems else "none")
        result = _run_with_progress(lambda: run_batch(prompts_file, model, options))
    except (PromptsFileError, ModelNotFoundError, ValueError, SeparatorUnavailable) as exc:
        fail(str(exc), 2)
    _report(result, out)


def generate_prompts(prompts: list[str], model: str, duration: float, seed: int, out: Path | None,
                     precision: str = "fp32", melody: Path | None = None) -> None:
    """Shared by `musicops models generate`: prompts from the command line, same machinery."""
    from musicops.generation.batch import run_batch
    from musicops.generation.planning import BatchOptions
    from musicops.generation.prompts import PromptsFileError, cli_items
    from musicops.registry import ModelNotFoundError

    try:
        items = cli_items(prompts, duration, seed, melody)
        options = BatchOptions(precision=precision)
        result = _run_with_progress(lambda: run_batch("<command line>", model, options, items=items))
    except (PromptsFileError, ModelNotFoundError, ValueError) as exc:
        fail(str(exc), 2)
    _report(result, out)


def _run_with_progress(run: Callable[[], Any]) -> Any:
    """Planning is a stage line; then the assets counter and each batch's decode steps (rich bars in a
    terminal, a line every few seconds otherwise), so a bad file or an unknown alias is never reported
    behind a progress bar and a long clip visibly advances."""
    from musicops import progress
    from musicops.config import get_settings

    with progress.console_reporting(err_console, get_settings().progress_interval_s):
        progress.stage("planning: reading prompts, resolving the model, checking the cache")
        return run()


def _report(result: object, out: Path | None) -> None:
    from rich.table import Table

    from musicops.generation.delivery import deliver
    from musicops.models.tiny import TINY_NOTICE, TINY_PRESET

    plan = result.plan  # type: ignore[attr-defined]
    if plan.model.name == TINY_PRESET or plan.model.tags.get("musicops.base_model") == TINY_PRESET:
        console.print(f"[yellow]note:[/] {TINY_NOTICE}")
    table = Table(title=f"batch {plan.batch_id} on {plan.model.pinned_uri}")
    for column in ("line", "var", "asset", "LUFS", "dBTP", "checks", "source"):
        table.add_column(column, no_wrap=column == "asset")
    for o in result.outcomes:  # type: ignore[attr-defined]
        r = o.record
        failed = [c["name"] for c in r.checks if not c["passed"]]
        table.add_row(str(o.item.line_no), str(o.item.variation), r.asset_id,
                      _fmt(r.loudness_after), _fmt(r.true_peak_after),
                      "[green]pass[/]" if r.passed else f"[red]fail: {', '.join(failed)}[/]",
                      "cache" if o.cache_hit else "generated")
    console.print(table)
    m = result.metrics  # type: ignore[attr-defined]
    console.print(f"{int(m['n_items'])} assets: {int(m['n_generated'])} generated, {int(m['n_cache_hits'])} from cache, "
                  f"{int(m['n_failed_checks'])} failed checks (kept out of delivery)")
    if "n_stems" in m:
        console.print(f"{int(m['n_stems'])} stem asset(s) (drums/bass/other/vocals per delivered clip, "
                      f"separator {result.plan.options.stems})")  # type: ignore[attr-defined]
    if m["n_generated"]:
        console.print(f"{m['tracks_per_minute']:.3g} tracks/min, real-time factor {m['real_time_factor']:.3g} "
                      f"(audio s per compute s), latency p50 {m.get('latency_p50_s', 0):.2f}s "
                      f"p95 {m.get('latency_p95_s', 0):.2f}s p99 {m.get('latency_p99_s', 0):.2f}s")
        console.print(f"cost per generated minute {m['cost_per_generated_minute']:.4g} "
                      f"({m['cost_per_generated_minute_excl_loading']:.4g} without the "
                      f"{m['model_load_seconds']:.1f} s model load)")
    if result.mlflow_run_id:  # type: ignore[attr-defined]
        console.print(f"MLflow run {result.mlflow_run_id}")  # type: ignore[attr-defined]
    if out is not None:
        paths = deliver(result, out)  # type: ignore[arg-type]
        console.print(f"delivered {len(paths)} file(s) to {out}")
    if m.get("n_not_reproduced"):
        err_console.print(f"[red]{int(m['n_not_reproduced'])} regenerated asset(s) differ from the stored ones "
                          "(non-deterministic generation?)[/]")
    if result.failed:  # type: ignore[attr-defined]
        err_console.print(f"[yellow]{len(result.failed)} asset(s) failed quality checks[/]")  # type: ignore[attr-defined]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
