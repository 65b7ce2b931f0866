"""Helpers shared by the CLI command modules: one console, error reporting, thread settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup, TyperOption

from musicops.errors import MusicopsError

if TYPE_CHECKING:
    # typer vendors click; the Context its commands receive is this class (not `click.Context`),
    # and it is only importable under typer's private name.
    from typer._click import Context

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error and exit non-zero (no traceback for expected problems)."""
    import typer

    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def report_error(exc: MusicopsError) -> NoReturn:
    """Print an expected failure as one red `error:` line (no traceback) and exit with its code."""
    import typer

    err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(exc.exit_code) from None


def _flag_type_hidden(option: TyperOption, ctx: Any) -> str | None:
    """Typer 0.29 prints "<bool>" in the type column of on/off flags, which take no value, so help read
    as if `--no-cache <bool>` wanted one. A flag shows no type; every other option is Typer's own."""
    if option.is_flag and option.metavar is None:
        return None
    return _typer_display_type(option, ctx)


_typer_display_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type_hidden  # type: ignore[method-assign,assignment]


class MusicopsGroup(TyperGroup):
    """The one place a `MusicopsError` from any command becomes an exit code (the root group's class,
    and a sub-app's when tests or scripts invoke it alone).

    Expected failures print one line and exit with the error's `exit_code`; any other exception is a bug
    and keeps its traceback.
    """

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except MusicopsError as exc:
            report_error(exc)
