"""Helpers shared by the CLI command modules: one console, error reporting, thread settings."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print a clear error and exit non-zero (no traceback for expected problems)."""
    import typer

    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
