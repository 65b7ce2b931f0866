"""`musicops gate` (the CI release gate) and `musicops registry ...` (promote, rollback, history).

Exit codes: 0 pass (or promoted by a recorded override of a failed gate), 1 a gate failed, 2 could
not evaluate or refused (nothing moved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from musicops.cli.common import console, err_console

registry_app = typer.Typer(no_args_is_help=True)


def _print_json(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _refuse(message: str, as_json: bool, what: str = "refused") -> None:
    """Exit 2 with a clear message; with --json also a machine-readable line on stdout."""
    if as_json:
        _print_json({"error": what, "detail": message, "exit_code": 2})
    err_console.print(f"[bold red]{what}:[/] {message}")
    raise typer.Exit(2)


def gate(
    candidate: str = typer.Option(..., help="models:/NAME/VERSION of the candidate."),
    baseline: str = typer.Option(None, help="Baseline version (default: the current holder of the --promote "
                                 "alias, or of @champion). Never the candidate itself."),
    catalog: str = typer.Option(None, help="Copyright catalog name (skipped when absent)."),
    mos_campaign: str = typer.Option(None, "--mos-campaign", help="MOS campaign id (skipped when absent)."),
    suite: Path = typer.Option(None, help="Regression suite file (its floors can tighten, never loosen, "
                               "the built-in minimums)."),
    out: Path = typer.Option(Path("release-report"), help="Folder for junit.xml, summary.md, release.html."),
    promote_to: str = typer.Option(None, "--promote", help="On success move this alias (e.g. champion)."),
    override_reason: str = typer.Option(None, "--override-reason",
                                        help="Promote despite FAILED gates (recorded); refused when a gate "
                                        "could not evaluate."),
    require: str = typer.Option(None, "--require", metavar="GATES",
                                help="Gates that must run, comma-separated (regression, copyright, mos, licence "
                                "or 'all'); a required gate that is skipped fails the run (exit 1). Default: "
                                "regression."),
    as_json: bool = typer.Option(False, "--json", help="Print the release report as JSON."),
) -> None:
    """Run every release gate; exit 0 pass, 1 a gate failed or a required gate was skipped, 2 could not
    evaluate or refused."""
    from musicops.registry import ModelNotFoundError, parse_model_uri
    from musicops.release.gates import ReleaseRefused, release

    try:
        ref = parse_model_uri(candidate)
        if not ref.version:
            _refuse("--candidate must name a version: models:/NAME/VERSION", as_json)
        from musicops import progress
        from musicops.config import get_settings

        with progress.console_reporting(err_console, get_settings().progress_interval_s):
            report = release(candidate, baseline, promote_to=promote_to, override_reason=override_reason,
                             out_dir=out, suite=suite, catalog=catalog, mos_campaign=mos_campaign, required=require)
    except ReleaseRefused as exc:
        _refuse(str(exc), as_json)
    except (ModelNotFoundError, ValueError) as exc:
        _refuse(str(exc), as_json, "could not evaluate")
    code = report.outcome_code
    if report.warning:
        err_console.print(f"[bold yellow]{report.warning}[/]")
    if as_json:
        _print_json(report.to_dict())
        raise typer.Exit(code)
    from rich.table import Table

    table = Table(title=f"release gates: {report.candidate} vs {report.baseline or '- (absolute floors only)'}")
    for column in ("gate", "status", "detail"):
        table.add_column(column, overflow="fold")
    colours = {"pass": "green", "fail": "red", "skipped": "yellow", "error": "magenta"}
    missing = report.skipped_required()
    for g in report.gates:
        status = "[bold red]required but skipped[/]" if g.name in missing else f"[{colours[g.status]}]{g.status}[/]"
        table.add_row(g.name, status, g.detail)
    console.print(table)
    for g in report.gates:
        if g.name in missing:
            err_console.print(f"[bold red]{report.headline(g)}[/]")
    console.print(f"required gates: {', '.join(report.required)}"
                  + (" (default; --require adds more)" if report.required == ("regression",) else ""))
    if report.suite:
        console.print(f"suite {report.suite['name']} v{report.suite['version']} sha256 {report.suite['sha256']}")
    console.print(f"reports: {out / 'release.html'}, {out / 'junit.xml'}, {out / 'summary.md'}")
    if report.promotion:
        done = report.promotion
        if done["promoted"]:
            console.print(f"[green]promoted[/] {done['detail']}"
                          + (" [yellow]by override[/] (recorded on the version)" if report.override else ""))
        else:
            console.print(f"[red]not promoted:[/] {done['detail']}")
    raise typer.Exit(code)


@registry_app.command("promote")
def promote_cmd(
    name: str = typer.Argument(...), version: str = typer.Argument(...),
    alias: str = typer.Option("champion"),
    override_reason: str = typer.Option(None, "--override-reason",
                                        help="Required: promoting by hand skips the gates, and says why."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Move an alias by hand (an override of the gates: needs a reason, recorded on the version)."""
    from musicops.release.promotion import PromotionError, promote

    try:
        done = promote(name, version, alias=alias, gates_passed=False, override_reason=override_reason)
    except (PromotionError, LookupError) as exc:
        _refuse(str(exc), as_json)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "alias": done.alias, "previous": done.previous,
                     "override": done.override, "history": list(done.history), "exit_code": 0})
        return
    console.print(f"models:/{done.name}/{done.version} is @{done.alias}; previous: {done.previous or '-'}")


@registry_app.command("rollback")
def rollback_cmd(name: str = typer.Argument(...), alias: str = typer.Option("champion"),
                 as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Move the alias back to its holder before; the version rolled back from is never re-promoted."""
    from musicops.release.promotion import PromotionError, rollback

    try:
        done = rollback(name, alias=alias)
    except (PromotionError, LookupError) as exc:
        _refuse(str(exc), as_json)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "alias": done.alias,
                     "rolled_back_from": done.previous, "history": list(done.history), "exit_code": 0})
        return
    console.print(f"rolled back: models:/{done.name}/{done.version} is @{done.alias} again "
                  f"(rolled back from v{done.previous}; history {' -> '.join(done.history)})")


@registry_app.command("history")
def history_cmd(name: str = typer.Argument(...), alias: str = typer.Option("champion"),
                as_json: bool = typer.Option(False, "--json", help="Print the history as JSON.")) -> None:
    """The alias's holders, oldest first (what `rollback` steps back through)."""
    from musicops.registry import configure_mlflow
    from musicops.release.promotion import PromotionError, alias_history

    configure_mlflow()
    try:
        history = alias_history(name, alias)
    except PromotionError as exc:
        _refuse(str(exc), as_json)
    if as_json:
        _print_json({"name": name, "alias": alias, "history": history, "exit_code": 0})
        return
    console.print(" -> ".join(f"v{v}" for v in history) if history else f"@{alias} has no recorded holder")
