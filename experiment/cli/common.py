"""What every command shares: logging set-up, the `--verbose` flag, one-line errors and progress displays.

Commands do not catch `AbflowError` themselves: the root command group (`AbflowGroup`) turns one that escapes any
command into a single `error:` line on stderr and the error's exit code, for the console script and for
`typer.testing.CliRunner` alike.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from experiment.core.errors import AbflowError
from experiment.runtime.redaction import install_log_redaction, redact

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["AbflowGroup", "Verbose", "configure_logging", "erased_on_failure", "fail", "run"]

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


class AbflowGroup(TyperGroup):
    """The `abflow` command group: an `AbflowError` raised by any command, however deeply nested, is reported once.

    Sub-commands run inside the root group's `invoke`, so this one handler covers every command; a command only
    raises. Used as `typer.Typer(cls=AbflowGroup)` for the root app.
    """

    def invoke(self, ctx: Any) -> Any:
        """Invoke the chosen command (`ctx` is typer's context); an expected failure becomes one `error:` line."""
        try:
            return super().invoke(ctx)
        except AbflowError as error:
            fail(error)


def run(app: typer.Typer) -> None:
    """Run the app; an `AbflowError` raised outside any command (none should be) still becomes one line."""
    try:
        app(standalone_mode=True)
    except AbflowError as error:
        typer.echo(redact(f"error: {error}"), err=True)
        sys.exit(error.exit_code)
