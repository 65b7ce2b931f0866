"""`musicops eval ...`: the regression suite (exit 0 pass, 1 regression, 2 could not evaluate)."""

from __future__ import annotations

from pathlib import Path

import typer

from musicops.cli.common import console, err_console

app = typer.Typer(no_args_is_help=True)


@app.command("regression")
def regression(
    candidate: str = typer.Option(..., help="Candidate model: models:/NAME/VERSION, models:/NAME@ALIAS, dir, preset."),
    baseline: str = typer.Option(..., help="Baseline model (usually models:/NAME@champion)."),
    suite: Path = typer.Option(None, help="Suite file (default: the repository's regression-v1.json)."),
    out: Path = typer.Option(Path("regression-report"), help="Folder for regression.json, junit.xml, report.html."),
    embedder: str = typer.Option(None, "--embedder", help="Override the suite's embedder: clap-tiny, or a hub CLAP "
                                 "such as clap:laion/clap-htsat-unfused[@REVISION] (HF cache; HF_HUB_OFFLINE "
                                 "respected). The suite as measured is written to OUT/suite.json."),
) -> None:
    """Generate the suite with both models, compare, write reports; exit 0 pass / 1 regression / 2 error."""
    from rich.table import Table

    from musicops.evaluation.regression import DEFAULT_SUITE, ERROR, SuiteError, run_regression
    from musicops.generation.prompts import PromptsFileError
    from musicops.models.hub import HubModelNotFoundError
    from musicops.registry import ModelNotFoundError

    try:
        suite_path = suite or DEFAULT_SUITE
        if embedder:
            suite_path = _suite_with_embedder(suite_path, embedder, out)
        from musicops import progress
        from musicops.config import get_settings

        with progress.console_reporting(err_console, get_settings().progress_interval_s):
            result = run_regression(candidate, baseline, suite_path, out)
    except (ModelNotFoundError, HubModelNotFoundError, SuiteError, PromptsFileError, ValueError,
            FileNotFoundError) as exc:
        err_console.print(f"[bold red]could not evaluate:[/] {exc}")
        raise typer.Exit(ERROR) from None
    if result.warning:
        err_console.print(f"[bold yellow]{result.warning}[/]")
    table = Table(title=f"{result.candidate} vs {result.baseline}")
    for column in ("gate", "verdict", "detail"):
        table.add_column(column, overflow="fold")
    for check in result.checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.detail)
    console.print(table)
    console.print(f"reports: {out / 'report.html'}, {out / 'junit.xml'}, {out / 'regression.json'}")
    raise typer.Exit(result.exit_code)


def _suite_with_embedder(suite: Path, embedder: str, out: Path) -> Path:
    """The suite with its embedder replaced, written to OUT/suite.json: the report then names (and
    hashes) the suite that was actually measured. The embedder is built once here, so an unknown
    name or a hub id missing from the cache fails before any audio is generated."""
    import json

    from musicops.evaluation.embedders import get_embedder
    from musicops.evaluation.regression import SuiteError

    # fail fast (HubModelNotFoundError: exit 2, naming the id and the cache); a hub CLAP's name pins
    # the commit it resolved to, so the suite as measured names exactly those weights
    pinned = get_embedder(embedder).name
    try:
        data = json.loads(suite.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"{suite}: not a usable regression suite ({exc})") from exc
    data["embedder"] = pinned
    data.pop("embedder_path", None)  # belonged to the suite's own embedder
    data["derived_from"] = str(suite)
    out.mkdir(parents=True, exist_ok=True)
    derived = out / "suite.json"
    derived.write_text(json.dumps(data, indent=2) + "\n")
    return derived


@app.command("compare")
def compare(first: Path = typer.Argument(...), second: Path = typer.Argument(...)) -> None:
    """Compare two regression.json results; refused when their metric provenance differs."""
    import json

    from musicops.evaluation.provenance import MetricProvenance, ProvenanceMismatchError, ensure_comparable

    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    try:
        ensure_comparable(MetricProvenance.from_dict(a["provenance"]), MetricProvenance.from_dict(b["provenance"]))
    except ProvenanceMismatchError as exc:
        err_console.print(f"[bold red]refused:[/] {exc}")
        raise typer.Exit(2) from None
    for key in ("frechet_distance", "drift_median", "artifact_rate_candidate"):
        console.print(f"{key}: {a['metrics'][key]:.4f} -> {b['metrics'][key]:.4f}")
    console.print(f"clap mean delta: {a['metrics']['clap']['mean_delta']:+.4f} -> {b['metrics']['clap']['mean_delta']:+.4f}")
