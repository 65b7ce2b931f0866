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
    embedder: str = typer.Option("none", "--embedder", help="'none' (fingerprints + alignment) or an embedder "
                                 "name; calibration keeps an embedding channel only if it separates copies "
                                 "(the random-init clap-tiny never does)."),
) -> None:
    """Add new works as the next catalog version; bad files are named and skipped (exit 0 with warnings)."""
    from musicops.evaluation.catalog.store import CatalogError, add_works, validate_name

    try:
        validate_name(name)
        with console.status("fingerprinting and aligning..." if embedder == "none" else "fingerprinting and embedding..."):
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
    files: list[Path] = typer.Argument(..., help="Audio file(s) to look up."),
    name: str = typer.Option(..., "--name", help="Catalog name."),
    k: int = typer.Option(5, "--k", min=1, max=100, help="How many works to show per file."),
    version: int = typer.Option(None, "--version", help="Catalog version (default: latest)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file, one per line."),
) -> None:
    """The gate's verdict per file, with the closest works. Exit 0: none blocked, 1: some blocked,
    2: could not evaluate (catalog unusable, or an unreadable file and nothing blocked)."""
    import json

    from musicops.evaluation.catalog.store import CatalogError, load_catalog

    try:
        catalog = load_catalog(name, version)
    except (CatalogError, FileNotFoundError, ValueError) as exc:
        if as_json:
            print(json.dumps({"error": str(exc), "catalog": name}), flush=True)
            raise typer.Exit(2) from None
        fail(str(exc), 2)
        return
    any_blocked = any_error = False
    for file in files:
        record, verdict = _search_one(catalog, file, k)
        any_blocked |= bool(record.get("blocked"))
        any_error |= "error" in record
        if as_json:
            print(json.dumps(record), flush=True)
        elif verdict is None:
            err_console.print(f"[bold red]error:[/] {record['error']}", soft_wrap=True, highlight=False)
        else:
            _print_verdict(file, catalog.ref, verdict, detail=len(files) == 1)
    raise typer.Exit(1 if any_blocked else 2 if any_error else 0)


def _search_one(catalog, file: Path, k: int) -> tuple[dict, object]:
    """(JSON record, verdict or None): one bad file never stops the others."""
    from musicops.audio.io import AudioError, read_audio
    from musicops.evaluation.catalog.gate import check_asset

    try:
        audio = read_audio(file)
        verdict = check_asset(catalog, audio.samples, audio.sample_rate, k=k)
    except (AudioError, ValueError, OSError) as exc:
        return {"file": str(file), "error": str(exc), "blocked": None, "work": None, "offset_s": None,
                "score": None, "threshold": None}, None
    best = verdict.top[0] if verdict.top else None
    score = None if best is None or best.fused_score == float("-inf") else round(best.fused_score, 5)
    record = {
        "file": str(file), "blocked": verdict.blocked,
        "work": Path(best.path).name if best is not None and verdict.blocked else None,
        "offset_s": round(best.offset_s, 3)
        if best is not None and verdict.blocked else None,
        "score": score, "threshold": round(verdict.threshold, 5),
        "closest": Path(best.path).name if best is not None else None,
        "channel": best.channel if best is not None else None,
        "semitones": best.semitones if best is not None else None,
        "tempo": best.tempo if best is not None else None,
        "catalog": verdict.catalog, "calibrated": verdict.calibrated,
    }
    return record, verdict


def _print_verdict(file: Path, ref: str, verdict, *, detail: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    if detail:
        table = Table(title=f"{file.name} vs {ref}", title_justify="left")
        table.caption = ("offsets in seconds; fp = fingerprint, align = pitch/tempo-tolerant alignment, "
                         "emb = embedding cosine, fused = gate score")
        for column in ("work", "title", "query at", "work at", "fp", "align", "emb", "fused"):
            table.add_column(column, justify="left" if column == "title" else "right", overflow="fold")
        for m in verdict.top:
            table.add_row(str(m.work_id), m.title, f"{m.query_offset_s:.2f}", f"{m.work_offset_s:.2f}",
                          f"{m.fingerprint_score:.4f}",
                          "-" if m.alignment_score is None else f"{m.alignment_score:.4f}",
                          "-" if m.embedding_score is None else f"{m.embedding_score:.4f}", f"{m.fused_score:.3f}")
        console.print(table)
    style = "bold red" if verdict.blocked else "green"
    console.print(f"[{style}]{'BLOCK' if verdict.blocked else 'pass'}[/] {escape(str(file))}: {escape(verdict.reason)}",
                  soft_wrap=True)


@app.command()
def calibrate(
    name: str = typer.Option(..., "--name", help="Catalog name."),
    negatives: Path = typer.Option(None, "--negatives", help="Folder of known-original music (not copies of any "
                                   "catalog work) added to the catalog's own leave-one-work-out negatives."),
    target_fpr: float = typer.Option(0.01, "--target-fpr", min=0.0001, max=0.5, help="Allowed false-positive rate."),
    seed: int = typer.Option(0, "--seed", help="Excerpts, transforms and folds are drawn from this seed."),
    n_per_transform: int = typer.Option(40, "--n-per-transform", min=2, help="Copies per transform."),
    n_negatives: int = typer.Option(1000, "--n-negatives", min=2, help="Excerpts that are not copies "
                                    "(>= 4 / target FPR: half fit the threshold, half state the FPR)."),
    excerpt_s: float = typer.Option(10.0, "--excerpt-s", min=2.0, max=60.0, help="Excerpt length in seconds."),
    version: int = typer.Option(None, "--version", help="Catalog version (default: latest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Choose channels and threshold for a target FPR on held-in works; state the FPR on held-out ones."""
    import json

    from rich.progress import Progress

    from musicops.evaluation.catalog.calibrate import calibrate as run_calibration
    from musicops.evaluation.catalog.store import CatalogError, load_catalog

    try:
        catalog = load_catalog(name, version)
        with Progress(console=err_console, transient=True, disable=as_json) as bar:
            task = bar.add_task(f"calibrating {catalog.ref}", total=None)
            report = run_calibration(catalog, target_fpr=target_fpr, seed=seed, n_per_transform=n_per_transform,
                                     n_negatives=n_negatives, excerpt_s=excerpt_s, negatives_dir=negatives,
                                     progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (CatalogError, FileNotFoundError, ValueError) as exc:
        if as_json:
            print(json.dumps({"error": str(exc), "catalog": name}))
            raise typer.Exit(2) from None
        fail(str(exc), 2)
        return
    for warning in report.warnings:
        err_console.print(f"[bold yellow]WARNING:[/] {warning}", soft_wrap=True)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    _print_calibration(report, catalog.directory / "catalog.json")


def _print_calibration(report, saved_to: Path) -> None:
    from rich.table import Table

    channels = Table(title="channels (fit fold)", title_justify="left")
    for column in ("channel", "AUC", "TPR at target", "used", "why"):
        channels.add_column(column, justify="right" if column in ("AUC", "TPR at target") else "left")
    for c in report.channel_report:
        channels.add_row(c.channel, "-" if c.auc is None else f"{c.auc:.3f}",
                         "-" if c.tpr_at_target is None else f"{c.tpr_at_target:.3f}",
                         "[green]yes[/]" if c.used else "[yellow]no[/]", c.reason)
    console.print(channels)
    table = Table(title=f"{report.catalog}: threshold {report.threshold:.4f} ({'+'.join(report.channels)}), held-out",
                  title_justify="left")
    for column in ("transform", "copies", "TPR", "right work", "negatives", "FPR"):
        table.add_column(column, justify="left" if column == "transform" else "right")
    for r in report.rows:
        table.add_row(r.transform, str(r.n_positive), f"{r.tpr:.3f}", f"{r.top1_correct:.3f}", str(r.n_negative),
                      f"{r.fpr:.3f}")
    console.print(table)
    console.print(f"[bold]{report.stated_fpr()}[/]; TPR {report.tpr:.3f} on held-out copies; negatives: "
                  + ", ".join(f"{n} from {src}" for src, n in report.negative_sources.items()))
    console.print(f"saved to {saved_to} ({report.elapsed_s:.1f} s)")


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
