"""`musicops keys ...`: API keys for `musicops serve` (stored hashed; a key is shown once)."""

from __future__ import annotations

import typer

from musicops.cli.common import console, fail

app = typer.Typer(no_args_is_help=True)


def _store():  # noqa: ANN202
    from musicops.config import get_settings
    from musicops.serving.keys import KeyStore

    return KeyStore.for_settings(get_settings().ensure())


@app.command("create")
def create(
    name: str = typer.Option(..., help="A name for the key (shown in logs and provenance as key:NAME)."),
    quota_minutes: float = typer.Option(None, help="Generated audio minutes per UTC day (default: unlimited)."),
    rate: str = typer.Option(None, help="Requests per minute, e.g. 60/min, 2/s (default: unlimited)."),
    tenant: str = typer.Option(None, help="Tenant whose assets and jobs the key sees (default: the key's name)."),
    admin: bool = typer.Option(False, "--admin", help="Admin scope: sees every tenant's assets, audits and jobs."),
) -> None:
    """Create a key and print it once: only its salted hash is stored."""
    store = _store()
    try:
        key, plaintext = store.create(name, quota_minutes, rate, tenant=tenant, admin=admin)
    except ValueError as exc:
        fail(str(exc), 2)
    finally:
        store.close()
    console.print(f"created key [bold]{key.name}[/] (id {key.key_id}); store it now, it is not shown again:",
                  highlight=False)
    typer.echo(plaintext)


@app.command("list")
def list_keys() -> None:
    """Keys with their limits (never the keys themselves)."""
    from rich.table import Table

    store = _store()
    try:
        keys = store.all()
    finally:
        store.close()
    table = Table()
    for column in ("name", "id", "tenant", "admin", "quota min/day", "rate/min", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.name, k.key_id, k.tenant or "", "yes" if k.admin else "",
                      "-" if k.quota_minutes_per_day is None else f"{k.quota_minutes_per_day:g}",
                      "-" if k.rate_per_min is None else f"{k.rate_per_min:g}", k.created_at.isoformat(timespec="seconds"),
                      "yes" if k.revoked else "")
    console.print(table)


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="Key name.")) -> None:
    """Revoke a key (takes effect within seconds on running servers)."""
    store = _store()
    try:
        revoked = store.revoke(name)
    finally:
        store.close()
    if not revoked:
        fail(f"no active key named {name!r}", 2)
    console.print(f"revoked {name}")
