"""`musicops datasets ...`: synthesize a captioned dataset, ingest a folder into a versioned manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from musicops.cli.common import console, fail

app = typer.Typer(no_args_is_help=True, help="Synthesize, ingest and validate audio datasets.")


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write clips and metadata.jsonl into."),
    n: int = typer.Option(16, "--n", min=1, help="Number of clips."),
    seed: int = typer.Option(0, "--seed", help="Same seed, bit-identical files."),
    duration: float = typer.Option(4.0, "--duration", min=0.5, max=600.0, help="Seconds per clip."),
) -> None:
    """Render a deterministic synthetic music dataset (melody, chords, bass, drums) with captions."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from musicops.datasets.synth import synthesize

    with Progress(TextColumn("[bold]synthesizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("synth", total=n)
        try:
            paths = synthesize(out, n=n, seed=seed, duration_s=duration,
                               progress=lambda done, _total: bar.update(task, completed=done))
        except ValueError as exc:
            fail(str(exc))
    console.print(f"[green]wrote[/] {len(paths)} clips ({len(paths) * duration:.1f} s of audio, seed {seed}) "
                  f"and metadata.jsonl to {Path(out).resolve()}")


@app.command()
def ingest(
    directory: Path = typer.Argument(..., help="Folder of audio files with captions."),
    name: str = typer.Option(..., "--name", help="Dataset name (letters, digits, '.', '_', '-')."),
) -> None:
    """Validate a folder (every file decodes, has a caption, passes the GX suite) and publish a version."""
    from rich.table import Table
    from rich.text import Text

    from musicops.datasets.ingest import IngestError
    from musicops.datasets.ingest import ingest as run_ingest

    try:
        with console.status("scanning and validating..."):
            result = run_ingest(directory, name)
    except IngestError as exc:
        found = exc.result
        if found is None:
            fail(str(exc))
        if found.problems:
            table = Table(title=f"{len(found.problems)} bad file(s)", title_justify="left")
            table.add_column("file", style="bold")
            table.add_column("problem", style="red")
            for problem in found.problems:
                table.add_row(problem.path, problem.problem)
            console.print(table)
        if found.validation is not None and found.validation.failures:
            console.print(f"[bold]{len(found.validation.failures)} failing expectation(s):[/]")
            for failure in found.validation.failures:
                console.print(Text.assemble(("  x ", "bold red"), failure))
        console.print(f"report: {found.report_path}")
        fail(f"dataset {name!r} was not published")
    except (ValueError, OSError) as exc:
        fail(str(exc))

    version = result.version
    assert version is not None  # ingest raises rather than return an unpublished result
    table = Table(title=f"published {version.ref}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    table.add_row("files", str(result.n_files))
    table.add_row("total duration", f"{result.total_duration_s:.1f} s")
    table.add_row("dataset hash", version.dataset_hash)
    table.add_row("manifest", str(version.path))
    table.add_row("report", str(result.report_path))
    if result.ignored:
        table.add_row("ignored", f"{len(result.ignored)} non-audio file(s), listed in the report")
    console.print(table)
