"""`abflow models compare`: trained models side by side, so a challenger is judged offline before any experiment.

Thin: the comparison is `training.compare` (pure functions plus the loading and re-scoring around them); this module
parses the options and prints. A directory that is not a verified model is one `error:` line and exit 2 (the root
group turns the `ModelError` into that).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from experiment.core.errors import ConfigError

__all__ = ["app", "compare"]

app = typer.Typer(help="Trained models: compare a challenger with the champion offline.", no_args_is_help=True)

FORMATS = ("text", "json")


@app.command("compare")
def compare(
    directories: Annotated[
        list[Path] | None,
        typer.Argument(metavar="DIR1 DIR2 [DIR...]", help="Model directories (each written by abflow train)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="text|json", help="Output format.")] = "text",
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Also score every model on this directory's test set (X_test/y_test.csv)."),
    ] = None,
) -> None:
    """Show the models' offline metrics side by side (and fresh ones on one test set with --data)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}. Got {fmt!r}.")
    given = list(directories or [])
    if len(given) < 2:
        raise ConfigError(f"models compare needs at least two model directories. Got {len(given)}.")
    from training import compare as comparing

    result = comparing.compare_models(given, data_dir=data)
    if fmt == "json":
        typer.echo(json.dumps(comparing.to_json(result), indent=2, sort_keys=True))
    else:
        typer.echo(comparing.format_text(result))
