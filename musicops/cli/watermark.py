"""`musicops watermark detect FILE...`: is a file marked, by which method, with which payload."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from musicops.cli.common import console, err_console

app = typer.Typer(no_args_is_help=True)


@app.command("detect")
def detect(
    files: list[Path] = typer.Argument(..., help="Audio files (wav, flac, ogg, mp3, aiff)."),
    method: str = typer.Option("perth", help="Detector: perth (offline) or audioseal (needs its weights)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line per file."),
) -> None:
    """Detect the watermark in each file. Exit 0 when every file was read (marked or not), 2 when
    any file could not be read (each named)."""
    from musicops.audio.io import AudioError, read_audio
    from musicops.audio.watermark import METHODS, get_watermarker

    if method not in METHODS:
        err_console.print(f"[bold red]error:[/] unknown watermark method {method!r}; expected one of "
                          f"{', '.join(METHODS)}")
        raise typer.Exit(2)
    watermarker = get_watermarker(method)  # WatermarkUnavailable -> one red line, exit 2
    unreadable = []
    for path in files:
        try:
            audio = read_audio(path)
        except AudioError as exc:
            unreadable.append(path)
            err_console.print(f"[bold red]error:[/] {exc}")
            continue
        found = watermarker.detect(audio.samples, audio.sample_rate)
        row = {"file": str(path), "detected": found.detected, "method": found.method,
               "confidence": found.confidence, "payload": found.payload}
        if as_json:
            typer.echo(json.dumps(row))
        else:
            verdict = "[green]marked[/]" if found.detected else "not marked"
            payload = "" if found.payload is None else f" payload {found.payload}"
            console.print(f"{path}: {verdict} ({found.method}, confidence {found.confidence:.3f}){payload}")
    if unreadable:
        raise typer.Exit(2)
