"""The `musicops` command line (Typer + Rich).

Each command group lives in its own module and imports heavy libraries (torch, mlflow, kfp,
great_expectations) only inside the command that needs them, so `musicops --help` stays fast.
"""

from __future__ import annotations

import typer

from musicops import __version__
from musicops.cli import assets, catalog, datasets, db, generate, models, mos, pipelines, watermark
from musicops.cli import eval as eval_cli
from musicops.cli import keys as keys_cli
from musicops.cli.common import MusicopsGroup
from musicops.cli.demo import demo
from musicops.cli.release import gate, registry_app
from musicops.cli.serve import serve

app = typer.Typer(
    name="musicops",
    cls=MusicopsGroup,  # MusicopsError -> one red line and its exit code, in one place
    help="MLOps pipelines and evaluation for AI music generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(datasets.app, name="datasets", help="Synthesize, ingest and validate audio datasets.")
app.add_typer(models.app, name="models", help="Generate with and inspect MusicGen models.")
app.add_typer(generate.app, name="generate", help="Batch generation into the asset store (cache, provenance).")
app.add_typer(assets.app, name="assets", help="Stored assets and their provenance.")
app.add_typer(eval_cli.app, name="eval", help="Regression suite and metric comparisons.")
app.add_typer(mos.app, name="mos", help="MOS listening tests: campaigns, rating server, results, export.")
app.add_typer(catalog.app, name="catalog", help="Reference catalog and copyright-similarity gate.")
app.add_typer(pipelines.app, name="pipelines", help="Run pipelines locally (kfp.local) or compile them.")
app.command("demo")(demo)
app.command("gate")(gate)
app.add_typer(registry_app, name="registry", help="Promote and roll back model versions (aliases).")
app.add_typer(keys_cli.app, name="keys", help="API keys for the generation server (stored hashed).")
app.command("serve")(serve)
app.add_typer(db.app, name="db", help="Database schema revisions and upgrades (Alembic).")
app.add_typer(watermark.app, name="watermark", help="Detect the watermark in delivered audio files.")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"musicops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """MLOps pipelines and evaluation for AI music generation."""


def main() -> None:
    app()
