"""`musicops gate` (the CI release gate) and `musicops registry ...` (promote, rollback)."""

from __future__ import annotations

from pathlib import Path

import typer

from musicops.cli.common import console, err_console, fail

registry_app = typer.Typer(no_args_is_help=True)


def gate(
    candidate: str = typer.Option(..., help="models:/NAME/VERSION of the candidate."),
    baseline: str = typer.Option(None, help="Baseline, usually models:/NAME@champion (default: that alias)."),
    catalog: str = typer.Option(None, help="Copyright catalog name (skipped when absent)."),
    mos_campaign: str = typer.Option(None, "--mos-campaign", help="MOS campaign id (skipped when absent)."),
    suite: Path = typer.Option(None, help="Regression suite file."),
    out: Path = typer.Option(Path("release-report"), help="Folder for junit.xml, summary.md, release.html."),
    promote_to: str = typer.Option(None, "--promote", help="On success move this alias (e.g. champion)."),
    override_reason: str = typer.Option(None, "--override-reason", help="Promote despite failed gates (recorded)."),
) -> None:
    """Run every release gate; exit 0 pass, 1 a gate failed, 2 could not evaluate."""
    from rich.table import Table

    from musicops.registry import ModelNotFoundError, parse_model_uri
    from musicops.release.gates import run_release_gates
    from musicops.release.promotion import PromotionError, current_alias, promote

    if override_reason is not None and not override_reason.strip():
        fail("--override-reason needs a non-empty reason", 2)
    try:
        ref = parse_model_uri(candidate)
        if not ref.version:
            fail("--candidate must name a version: models:/NAME/VERSION", 2)
        if baseline is None:
            from musicops.registry import configure_mlflow

            configure_mlflow()
            baseline = f"models:/{ref.name}@champion" if current_alias(ref.name, "champion") else None
        report = run_release_gates(candidate, baseline, out_dir=out, suite=suite, catalog=catalog,
                                   mos_campaign=mos_campaign, alias=promote_to or "champion")
    except (ModelNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]could not evaluate:[/] {exc}")
        raise typer.Exit(2) from None
    table = Table(title=f"release gates: {report.candidate} vs {report.baseline or '-'}")
    for column in ("gate", "status", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"pass": "green", "fail": "red", "skipped": "yellow", "error": "magenta"}
    for g in report.gates:
        table.add_row(g.name, f"[{colours[g.status]}]{g.status}[/]", g.detail)
    console.print(table)
    console.print(f"reports: {out / 'release.html'}, {out / 'junit.xml'}, {out / 'summary.md'}")
    code = report.exit_code
    if promote_to and (code == 0 or override_reason):
        try:
            done = promote(ref.name, ref.version, alias=promote_to, gates_passed=code == 0,
                           override_reason=override_reason)
        except PromotionError as exc:
            fail(str(exc), 1)
        console.print(f"[green]promoted[/] models:/{done.name}/{done.version} to @{done.alias}"
                      + (f" (previous: v{done.previous})" if done.previous else "")
                      + (" [yellow]by override[/]" if done.overridden else ""))
        code = 0 if code in (0, 1) else code
    elif promote_to:
        console.print(f"[red]not promoted:[/] @{promote_to} unchanged")
    raise typer.Exit(code)


@registry_app.command("promote")
def promote_cmd(
    name: str = typer.Argument(...), version: str = typer.Argument(...),
    alias: str = typer.Option("champion"),
    override_reason: str = typer.Option(None, "--override-reason",
                                        help="Required: promoting by hand skips the gates, and says why."),
) -> None:
    """Move an alias by hand (an override of the gates: needs a reason, recorded on the version)."""
    from musicops.release.promotion import PromotionError, promote

    try:
        done = promote(name, version, alias=alias, gates_passed=False, override_reason=override_reason)
    except (PromotionError, LookupError) as exc:
        fail(str(exc), 2)
    console.print(f"models:/{done.name}/{done.version} is @{done.alias}; previous: {done.previous or '-'}")


@registry_app.command("rollback")
def rollback_cmd(name: str = typer.Argument(...), alias: str = typer.Option("champion")) -> None:
    """Swap `champion` and `previous`."""
    from musicops.release.promotion import PromotionError, rollback

    try:
        done = rollback(name, alias=alias)
    except PromotionError as exc:
        fail(str(exc), 2)
    console.print(f"rolled back: models:/{done.name}/{done.version} is @{done.alias} again "
                  f"(v{done.previous} is now @previous)")
