"""`musicops assets ...`: look up stored assets and their provenance."""

from __future__ import annotations

import json

import typer

from musicops.cli.common import console, fail

app = typer.Typer(no_args_is_help=True)


@app.command("show")
def show(asset_id: str = typer.Argument(..., help="Asset id (a_...)")) -> None:
    """Print an asset's provenance record (and gate verdicts) as JSON."""
    from musicops.config import get_settings
    from musicops.store.provenance import ProvenanceDB

    db = ProvenanceDB.from_settings(get_settings())
    try:
        record = db.get_asset(asset_id)
        gates = db.gates_for(asset_id) if record is not None else []
    finally:
        db.close()
    if record is None:
        fail(f"no asset {asset_id!r}", 2)
    console.print_json(json.dumps({**record.to_dict(), "gates": gates}))


@app.command("list")
def list_assets(batch: str = typer.Option(None, help="Only this batch id.")) -> None:
    """List stored assets (id, sha256, prompt, model, checks)."""
    from rich.table import Table

    from musicops.config import get_settings
    from musicops.store.provenance import ProvenanceDB

    db = ProvenanceDB.from_settings(get_settings())
    try:
        records = db.list_assets(batch)
    finally:
        db.close()
    table = Table()
    for column in ("asset", "sha256", "model", "seed", "passed", "prompt"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(r.asset_id, r.sha256[:12], r.model_uri, str(r.seed), "yes" if r.passed else "no", r.prompt[:60])
    console.print(table)
