"""`musicops db ...`: the schema revision of every database of a state directory, and upgrades.

Four Alembic histories (musicops.store.migrations): provenance (`MUSICOPS_DATABASE_URL`), MOS
(`MUSICOPS_MOS_DATABASE_URL`), and the serving database's keys and jobs
(`MUSICOPS_SERVING_DATABASE_URL`); each defaults to a SQLite file in the state directory. Stores
upgrade on open anyway; this command does it ahead of a deploy and shows where each one stands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from musicops.cli.common import console, err_console

if TYPE_CHECKING:
    from musicops.config import Settings

app = typer.Typer(no_args_is_help=True)


def database_urls(settings: Settings) -> dict[str, str]:
    """Each history's database URL for the settings, as the stores themselves resolve it."""
    return {"provenance": settings.database_url, "mos": settings.mos_database,
            "keys": settings.serving_database("keys.db"), "jobs": settings.serving_database("jobs.db")}


def _missing_sqlite_file(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    return (parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
            and not database.startswith("file:") and not Path(database).expanduser().exists())


def _run(upgrade: bool) -> list[dict[str, Any]]:
    from sqlalchemy.exc import OperationalError

    from musicops.config import get_settings
    from musicops.store import migrations
    from musicops.store.database import make_engine

    settings = get_settings()
    report: list[dict[str, Any]] = []
    for history, url in database_urls(settings).items():
        if not upgrade and _missing_sqlite_file(url):  # `current` never creates a database
            report.append(migrations.SchemaStatus(history, url, None, None, migrations.head(history)).to_dict()
                          | {"exists": False})
            continue
        engine = make_engine(url, f"{history} database")
        try:
            status = migrations.upgrade(engine, history) if upgrade else migrations.current(engine, history)
            report.append(status.to_dict() | {"exists": True})
        except (migrations.SchemaError, OperationalError) as exc:
            shown = engine.url.render_as_string(hide_password=True)
            message = (str(exc) if isinstance(exc, migrations.SchemaError)
                       else f"cannot open the {history} database {shown}: {str(exc.orig or exc).strip()}")
            report.append({"database": history, "url": shown, "error": message, "up_to_date": False})
        finally:
            engine.dispose()
    return report


def _state(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return f"[red]error[/]: {entry['error']}"
    if entry["up_to_date"]:
        if entry["before"] == entry["current"]:
            return "[green]up to date[/]"
        if entry.get("stamped"):
            return f"[green]upgraded[/]: made before migrations, matched {entry['stamped']}"
        return f"[green]upgraded[/] from {entry['before']}" if entry["before"] else "[green]created[/]"
    if entry["current"] is None:
        if not entry.get("exists", True):
            return "not created yet"
        matched = entry.get("stamped")
        return f"made before migrations, matches {matched}" if matched else "empty"
    return "behind: run `musicops db upgrade`"


def _show(report: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        from rich.table import Table

        table = Table()
        for column in ("database", "url", "revision", "head", "state"):
            table.add_column(column)
        for entry in report:
            table.add_row(entry["database"], entry["url"], entry.get("current") or "-", entry.get("head") or "-",
                          _state(entry))
        console.print(table)
    failed = [entry for entry in report if "error" in entry]
    if failed:
        for entry in failed:
            err_console.print(f"[bold red]error:[/] {entry['error']}", highlight=False)
        raise typer.Exit(1)


@app.command("upgrade")
def upgrade(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Upgrade every database to the schema this musicops expects (stamping pre-migration ones)."""
    _show(_run(upgrade=True), as_json)


@app.command("current")
def current(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Show each database's schema revision next to the code's; changes nothing."""
    _show(_run(upgrade=False), as_json)
