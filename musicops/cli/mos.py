"""`musicops mos ...`: MOS listening-test campaigns (create + invite, results, export, MLflow tags).

Invitation links are printed once: only a hash of each token is stored, so a lost link means
inviting a new rater (`musicops mos invite`). Base URL: MUSICOPS_MOS_URL (default
http://127.0.0.1:8765), where `musicops mos serve` listens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from musicops.cli.common import MusicopsGroup, console, err_console, fail

if TYPE_CHECKING:
    from musicops.evaluation.mos.models import CampaignResults, Invite
    from musicops.evaluation.mos.service import MosService

app = typer.Typer(no_args_is_help=True, cls=MusicopsGroup)  # its own errors, also when invoked alone

# serve command: see musicops.evaluation.mos.app


def _service() -> MosService:
    from musicops.config import get_settings
    from musicops.evaluation.mos.service import MosService

    return MosService.from_settings(get_settings())


def _print_invites(invites: list[Invite]) -> None:
    from musicops.evaluation.mos.invites import invite_url

    for invite in invites:
        typer.echo(f"{invite.rater_id}\t{invite_url(invite.token)}")


@app.command("create")
def create(
    batch: str = typer.Option(..., "--batch", help="Batch whose assets are rated (`musicops assets list`)."),
    name: str = typer.Option(..., "--name", help="Campaign name."),
    method: str = typer.Option("acr", "--method", help="acr (1-5, ITU-T P.800) or mushra (0-100, BS.1534)."),
    raters: int = typer.Option(0, "--raters", help="Raters to invite (0 = just enough for the quorum)."),
    quorum: int = typer.Option(3, "--quorum", help="Valid ratings every test clip needs."),
    clips_per_rater: int = typer.Option(0, "--clips-per-rater", help="Test clips per rater (0 = all)."),
    seed: int = typer.Option(0, "--seed", help="Seed for per-rater subsets and orders."),
    traps: int = typer.Option(1, "--traps", help="Attention-check questions per rater."),
    reference: list[Path] = typer.Option([], "--reference",
                                         help="Hidden reference audio file (repeatable; MUSHRA needs one)."),
    anchors: int = typer.Option(0, "--anchors", help="3.5 kHz low-pass anchors (of the references if any)."),
    instructions: str = typer.Option("", "--instructions", help="Text shown to raters before they start."),
) -> None:
    """Create a campaign from a batch and print one invitation URL per rater (shown only this once)."""
    from musicops.config import get_settings
    from musicops.evaluation.mos.assignment import raters_for_quorum
    from musicops.evaluation.mos.errors import MosError
    from musicops.evaluation.mos.sources import campaign_assets_from_batch

    settings = get_settings()
    try:
        assets = campaign_assets_from_batch(batch, settings, references=reference, anchors=anchors)
        with _service() as service:
            campaign_id = service.create_campaign(name, assets, method=method,
                                                  clips_per_rater=clips_per_rater or None, quorum=quorum,
                                                  seed=seed, n_traps=traps, instructions=instructions)
            n_test = sum(1 for a in assets if a.role == "test")
            n_raters = raters or raters_for_quorum(n_test, quorum, clips_per_rater or None)
            invites = service.invite(campaign_id, n_raters)
    except (MosError, ValueError, FileNotFoundError) as exc:
        fail(str(exc), 2)
    err_console.print(f"campaign [bold]{campaign_id}[/]: {len(assets)} assets ({n_test} test), "
                      f"{len(invites)} raters; links below are shown only once")
    needed = raters_for_quorum(n_test, quorum, clips_per_rater or None)
    if raters and raters < needed:
        err_console.print(f"[bold yellow]warning:[/] {raters} rater(s) cannot reach the quorum of {quorum} ratings per "
                          f"clip ({needed} needed with {clips_per_rater or 'all'} clip(s) each, even if every one "
                          f"finishes); invite more with `musicops mos invite {campaign_id} --raters {needed - raters}`")
    typer.echo(campaign_id)
    _print_invites(invites)


@app.command("invite")
def invite(campaign_id: str = typer.Argument(...),
           raters: int = typer.Option(1, "--raters", help="How many more raters to invite.")) -> None:
    """Invite more raters to an open campaign (e.g. after some were screened out)."""
    from musicops.evaluation.mos.errors import MosError

    try:
        with _service() as service:
            invites = service.invite(campaign_id, raters)
    except (MosError, ValueError) as exc:
        fail(str(exc), 2)
    _print_invites(invites)


def _fmt(value: float, digits: int = 2) -> str:
    import math

    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


@app.command("results")
def results(campaign_id: str = typer.Argument(...),
            plot: Path = typer.Option(None, "--plot", help="PNG of MOS with 95% CI per model version."),
            as_json: bool = typer.Option(False, "--json", help="Print the results as JSON.")) -> None:
    """MOS per model version and per asset with 95% t-intervals, agreement and screening counts."""
    import json

    from rich.table import Table

    with _service() as service:  # MosError (no such campaign): the CLI's one error handler, exit 2
        outcome = service.results(campaign_id)
    if as_json:
        console.print_json(json.dumps(outcome.to_dict(), default=str))
    else:
        low, high = outcome.scale
        console.print(f"[bold]{outcome.name}[/] ({campaign_id}, {outcome.method.upper()} {low:g}-{high:g}): "
                      f"{outcome.n_valid_raters} valid raters, {outcome.n_screened} screened out, "
                      f"alpha ({outcome.alpha_level}) {_fmt(outcome.alpha, 3)}, quorum {outcome.quorum} "
                      + ("[green]met[/]" if outcome.quorum_met else "[yellow]not met[/]"))
        table = Table(title="per model version")
        for column in ("model version", "MOS", "95% CI", "ratings", "raters", "clips"):
            table.add_column(column, overflow="fold")
        for m in outcome.model_versions:
            table.add_row(m.model_version, _fmt(m.mos), f"{_fmt(m.ci_low)} - {_fmt(m.ci_high)}",
                          str(m.n_ratings), str(m.n_raters), str(m.n_assets))
        console.print(table)
        table = Table(title="per asset")
        for column in ("asset", "role", "model version", "MOS", "95% CI", "ratings"):
            table.add_column(column, overflow="fold")
        for a in outcome.assets:
            table.add_row(a.asset_id, a.role, a.model_version or "", _fmt(a.mos),
                          f"{_fmt(a.ci_low)} - {_fmt(a.ci_high)}", str(a.n_ratings))
        console.print(table)
    if plot is not None:
        _plot(outcome, plot)
        err_console.print(f"plot: {plot}")


def _plot(outcome: CampaignResults, path: Path) -> None:
    """One point + error bar per model version (and references/anchors), the shared MOS plot."""
    from musicops.reports.plots import MosPoint, mos_errorbar_png

    points = [MosPoint(m.model_version, m.mos, m.ci_low, m.ci_high) for m in outcome.model_versions]
    points += [MosPoint(f"{a.role}: {a.asset_id}", a.mos, a.ci_low, a.ci_high) for a in outcome.assets
               if a.role in ("reference", "anchor")]
    png = mos_errorbar_png(points, title=outcome.name, scale=outcome.scale, dpi=120,
                           ylabel=f"MOS ({outcome.method.upper()}), {outcome.confidence:.0%} CI")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


@app.command("export")
def export(campaign_id: str = typer.Argument(...),
           out: Path = typer.Argument(..., help="OUT.csv or OUT.parquet: one row per rating.")) -> None:
    """Export every rating (screened raters flagged) as CSV or Parquet."""
    from musicops.evaluation.mos.errors import MosError

    try:
        with _service() as service:
            path = service.export(campaign_id, out)
    except (MosError, ValueError) as exc:
        fail(str(exc), 2)
    console.print(f"wrote {path}")


@app.command("log-mlflow")
def log_mlflow(campaign_id: str = typer.Argument(...)) -> None:
    """Tag each rated registered version with its MOS (mos, mos_ci_low, mos_ci_high, n_ratings, campaign)."""
    from musicops.config import get_settings
    # MosError (no such campaign), ModelNotFoundError: the CLI's one error handler, exit 2
    with _service() as service:
        tagged = service.log_to_mlflow(campaign_id, get_settings())
    if not tagged:
        console.print("no registered model versions in this campaign (presets and directories are skipped)")
    for version in tagged:
        console.print(f"tagged {version}")


@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback unless told otherwise)."),
          port: int = typer.Option(8765, "--port", help="TCP port.")) -> None:
    """Serve the rating pages (/r/TOKEN) and results (/campaigns/ID/results) with uvicorn.

    Results need MUSICOPS_MOS_ADMIN_TOKEN (?admin=..., X-Admin-Token or Authorization: Bearer) when it is
    set; without it only loopback clients see them. Invite tokens are scrubbed from the access log.
    """
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from musicops.config import get_settings
    from musicops.evaluation.mos.app import create_app

    settings = get_settings().ensure()
    web_app = create_app(settings)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config.setdefault("filters", {})["redact_tokens"] = {
        "()": "musicops.evaluation.mos.security.RedactTokensFilter"}
    for handler in log_config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"MOS rating app: http://{shown}:{port}/  (results: /campaigns/CAMPAIGN_ID/results)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print("[yellow]listening beyond loopback: set MUSICOPS_MOS_ADMIN_TOKEN and serve over HTTPS "
                          "(a TLS-terminating proxy); invite links are credentials[/]")
    uvicorn.run(web_app, host=host, port=port, log_config=log_config)
