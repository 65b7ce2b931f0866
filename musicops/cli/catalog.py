"""`musicops catalog ...`: build the reference catalog, search it, calibrate the copyright gate."""

from __future__ import annotations

from pathlib import Path

import typer

from musicops.cli.common import console, err_console, fail

app = typer.Typer(no_args_is_help=True, help="Reference catalog and copyright-similarity gate.")


def _embedder_arg(name: str):
    """'none' = fingerprints only; anything else is an embedder registry name."""
    if name.lower() == "none":
        return None
    from musicops.evaluation.embedders import get_embedder

    return get_embedder(name)


@app.command()
def add(
    directory: Path = typer.Argument(..., help="Folder of reference audio (searched recursively)."),
    name: str = typer.Option(..., "--name", help="Catalog name (letters, digits, '.', '_', '-')."),
    embedder: str = typer.Option("clap-tiny", "--embedder", help="Embedder name, or 'none' for fingerprints only."),
) -> None:
    """Add new works as the next catalog version; bad files are named and skipped (exit 0 with warnings)."""
    from musicops.evaluation.catalog.store import CatalogError, add_works, validate_name

    try:
        validate_name(name)
        with console.status("fingerprinting and embedding..."):
            result = add_works(directory, name, embedder=_embedder_arg(embedder))
    except CatalogError as exc:
        _print_problems(exc.problems)
        fail(str(exc))
        return
    except (ValueError, OSError) as exc:
        fail(str(exc))
        return
    _print_problems(result.problems)
    counts = result.info["counts"]
    if result.added:
        console.print(f"[green]{result.ref}[/]: added {len(result.added)} work(s), skipped {len(result.skipped)} "
                      f"already in the catalog; now {counts['works']} works, {counts['windows']} windows, "
                      f"{counts['hashes']} hashes")
    else:
        console.print(f"nothing new: {len(result.skipped)} file(s) already in {result.ref}")
    if result.problems:
        err_console.print(f"[yellow]warning:[/] {len(result.problems)} bad file(s) were not added (listed above)")
    if result.added:
        console.print(f"uncalibrated until: musicops catalog calibrate --name {name}")


def _print_problems(problems: list) -> None:
    """One line per bad file, never wrapped, so the full path can be copied (and grepped)."""
    if not problems:
        return
    from rich.markup import escape

    err_console.print(f"[bold red]{len(problems)} bad file(s), skipped:[/]")
    for problem in problems:
        err_console.print(f"  {escape(problem.path)}: {escape(problem.problem)}", soft_wrap=True, highlight=False)


@app.command()
def search(
    file: Path = typer.Argument(..., help="Audio file to look up."),
    name: str = typer.Option(..., "--name", help="Catalog name."),
    k: int = typer.Option(5, "--k", min=1, max=100, help="How many works to show."),
    version: int = typer.Option(None, "--version", help="Catalog version (default: latest)."),
) -> None:
    """The closest catalog works, with offsets and fingerprint / embedding / fused scores, and the verdict."""
    from rich.table import Table

    from musicops.audio.io import AudioError, read_audio
    from musicops.evaluation.catalog.gate import check_asset
    from musicops.evaluation.catalog.store import CatalogError, load_catalog

    try:
        audio = read_audio(file)
        catalog = load_catalog(name, version)
        with console.status("matching..."):
            verdict = check_asset(catalog, audio.samples, audio.sample_rate, k=k)
    except (AudioError, CatalogError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    table = Table(title=f"{file.name} vs {catalog.ref}", title_justify="left")
    table.caption = "offsets in seconds; fp = fingerprint score, emb = embedding cosine, fused = gate score"
    for column in ("work", "title", "query at", "work at", "fp", "emb", "fused"):
        table.add_column(column, justify="left" if column == "title" else "right", overflow="fold")
    for m in verdict.top:
        table.add_row(str(m.work_id), m.title, f"{m.query_offset_s:.2f}", f"{m.work_offset_s:.2f}",
                      f"{m.fingerprint_score:.4f}", "-" if m.embedding_score is None else f"{m.embedding_score:.4f}",
                      f"{m.fused_score:.3f}")
    console.print(table)
    style = "bold red" if verdict.blocked else "green"
    console.print(f"[{style}]{'BLOCK' if verdict.blocked else 'pass'}[/]: {verdict.reason}")


@app.command()
def calibrate(
    name: str = typer.Option(..., "--name", help="Catalog name."),
    target_fpr: float = typer.Option(0.01, "--target-fpr", min=0.0001, max=0.5, help="Allowed false-positive rate."),
    seed: int = typer.Option(0, "--seed", help="Excerpts, transforms and negatives are drawn from this seed."),
    n_per_transform: int = typer.Option(40, "--n-per-transform", min=1, help="Positives per transform."),
    n_negatives: int = typer.Option(280, "--n-negatives", min=1, help="Unrelated clips (>= 2 / target FPR)."),
    version: int = typer.Option(None, "--version", help="Catalog version (default: latest)."),
) -> None:
    """Choose the gate threshold for a target FPR; print TPR/FPR per transform; save it in catalog.json."""
    from rich.table import Table

    from musicops.evaluation.catalog.calibrate import calibrate as run_calibration
    from musicops.evaluation.catalog.store import CatalogError, load_catalog

    try:
        catalog = load_catalog(name, version)
        with console.status(f"calibrating {catalog.ref}..."):
            report = run_calibration(catalog, target_fpr=target_fpr, seed=seed, n_per_transform=n_per_transform,
                                     n_negatives=n_negatives)
    except (CatalogError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    table = Table(title=f"{report.catalog}: threshold {report.threshold:.4f} ({'+'.join(report.channels)}), "
                        f"FPR {report.fpr:.4f} on {report.n_negatives} negatives", title_justify="left")
    for column in ("transform", "positives", "TPR", "top-1 correct", "negatives", "FPR"):
        table.add_column(column, justify="left" if column == "transform" else "right")
    for r in report.rows:
        table.add_row(r.transform, str(r.n_positive), f"{r.tpr:.3f}", f"{r.top1_correct:.3f}", str(r.n_negative),
                      f"{r.fpr:.3f}")
    console.print(table)
    console.print(f"saved to {catalog.directory / 'catalog.json'} ({report.elapsed_s:.1f} s)")


@app.command()
def versions(name: str = typer.Option(..., "--name", help="Catalog name.")) -> None:
    """Complete versions of a catalog, with counts and calibration state."""
    import json

    from rich.table import Table

    from musicops.evaluation.catalog.store import INFO_FILE, catalog_dir, list_versions
    from musicops.store.versions import version_dir

    try:
        found = list_versions(name)
    except ValueError as exc:
        fail(str(exc))
        return
    if not found:
        fail(f"catalog {name!r} has no versions")
    table = Table(title=name, title_justify="left")
    for column in ("version", "works", "windows", "hashes", "threshold", "created"):
        table.add_column(column)
    for v in found:
        info = json.loads((version_dir(catalog_dir(name), v) / INFO_FILE).read_text(encoding="utf-8"))
        threshold = info.get("threshold")
        table.add_row(f"v{v}", str(info["counts"]["works"]), str(info["counts"]["windows"]),
                      str(info["counts"]["hashes"]), "-" if threshold is None else f"{threshold:.4f}",
                      info["created_at"])
    console.print(table)


@app.command()
def gate(
    name: str = typer.Option(..., "--name", help="Catalog name."),
    batch: str = typer.Option(None, "--batch", help="Check every asset of this batch."),
    asset: list[str] = typer.Option(None, "--asset", help="Asset id (repeatable)."),
) -> None:
    """Copyright gate on stored assets; verdicts go into provenance. Exit 1 if any asset is blocked."""
    from rich.table import Table

    from musicops.evaluation.catalog.assets_gate import gate_assets

    try:
        results = gate_assets(name, list(asset or []), batch)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""), 2)
    table = Table(title=f"copyright gate: catalog {name}")
    for column in ("asset", "verdict", "reason"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(r.asset_id, "[red]BLOCKED[/]" if r.blocked else "[green]pass[/]", r.reason)
    console.print(table)
    if any(r.blocked for r in results):
        raise typer.Exit(1)
