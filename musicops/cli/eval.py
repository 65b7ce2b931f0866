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
) -> None:
    """Generate the suite with both models, compare, write reports; exit 0 pass / 1 regression / 2 error."""
    from rich.table import Table

    from musicops.evaluation.regression import DEFAULT_SUITE, ERROR, SuiteError, run_regression
    from musicops.generation.prompts import PromptsFileError
    from musicops.registry import ModelNotFoundError

    try:
        result = run_regression(candidate, baseline, suite or DEFAULT_SUITE, out)
    except (ModelNotFoundError, SuiteError, PromptsFileError, ValueError, FileNotFoundError) as exc:
        err_console.print(f"[bold red]could not evaluate:[/] {exc}")
        raise typer.Exit(ERROR) from None
    table = Table(title=f"{result.candidate} vs {result.baseline}")
    for column in ("gate", "verdict", "detail"):
        table.add_column(column, overflow="fold")
    for check in result.checks:
        table.add_row(check.name, "[green]pass[/]" if check.passed else "[red]FAIL[/]", check.detail)
    console.print(table)
    console.print(f"reports: {out / 'report.html'}, {out / 'junit.xml'}, {out / 'regression.json'}")
    raise typer.Exit(result.exit_code)


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
