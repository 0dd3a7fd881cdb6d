"""What every command shares: logging set-up, one-line errors, and the settings flags."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, NoReturn

import typer

from experiment.errors import AbflowError

__all__ = ["Verbose", "configure_logging", "fail", "run"]

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level to stderr.")]


def configure_logging(verbose: bool) -> None:
    """Only entry points configure handlers; libraries just log with key=value context."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def fail(error: AbflowError) -> NoReturn:
    """Print an expected failure as one line on stderr and exit with its code."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=error.exit_code)


def run(app: typer.Typer) -> None:
    """Run the app; an `AbflowError` that escapes a command becomes one line and its exit code."""
    try:
        app(standalone_mode=True)
    except AbflowError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
