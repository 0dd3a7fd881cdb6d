"""What every command shares: logging set-up, one-line errors, and the settings flags."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from experiment.core.errors import AbflowError
from experiment.runtime.redaction import install_log_redaction, redact

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["Verbose", "configure_logging", "erased_on_failure", "fail", "run"]

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level to stderr.")]


def configure_logging(verbose: bool) -> None:
    """Only entry points configure handlers; libraries just log with key=value context.

    Secrets are masked in every record, at any level. kafka-python is silent unless `verbose`: an unreachable broker
    makes it log a dozen ERROR lines per second, and the command reports the failure in one line anyway.
    """
    install_log_redaction()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.NOTSET if verbose else logging.CRITICAL)


def fail(error: AbflowError) -> NoReturn:
    """Print an expected failure as one line on stderr (secrets masked) and exit with its code."""
    typer.echo(redact(f"error: {error}"), err=True)
    raise typer.Exit(code=error.exit_code)


@contextlib.contextmanager
def erased_on_failure(progress: Progress) -> Iterator[Progress]:
    """Show `progress` while the block runs, and erase it if the block fails.

    A failure is told by its one `error:` line; the progress display's last frame would otherwise stay above it
    (and is all a log file would get from it).
    """
    with progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            progress.live.stop()
            progress.disable = True  # else leaving `with progress` prints a blank line when stderr is not a terminal
            raise


def run(app: typer.Typer) -> None:
    """Run the app; an `AbflowError` that escapes a command becomes one line and its exit code."""
    try:
        app(standalone_mode=True)
    except AbflowError as error:
        typer.echo(redact(f"error: {error}"), err=True)
        sys.exit(error.exit_code)
