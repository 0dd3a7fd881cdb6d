"""`abflow train`: grid-search the XGBoost pipeline, export PMML, gate on parity, write model.json.

The options that make a challenger (``--seed``, ``--grid``, ``--features``, ``--name``) are checked by
`training.train` itself (one `ConfigError` line, exit 2), so the script entry point refuses the same things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["train"]


def train(
    data: Annotated[Path, typer.Option("--data", help="Directory with X/y train/test CSVs.")] = Path("data"),
    out: Annotated[Path, typer.Option("--out", help="Directory for the model artefacts.")] = Path("artifacts/model"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Same as --grid quick: 2x2 grid, 3 folds (tests, demos).")
    ] = False,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.0, max=1.0, help="Decision threshold on P(show).")
    ] = 0.5,
    seed: Annotated[
        int, typer.Option("--seed", help="random_state for the CV folds, XGBoost and the RandomForest.")
    ] = 7,  # training.train.DEFAULT_SEED (not imported here: `abflow --help` must not load numpy)
    grid: Annotated[
        str | None,
        typer.Option("--grid", metavar="quick|default|wide", help="Named grid (default: default; see the docs)."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features", metavar="LIST", help="Comma-separated subset of the feature columns (default: all)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label stored in model.json, e.g. challenger.")] = None,
    parity_tolerance: Annotated[
        float, typer.Option("--parity-tolerance", hidden=True, help="Max |P_pmml - P_native| (tests only).")
    ] = 1e-6,
) -> None:
    """Train the targeting model and export a parity-checked PMML (exit 3 when parity fails)."""
    from training import train as training

    config = training.TrainConfig(
        data_dir=data,
        out_dir=out,
        quick=quick,
        threshold=threshold,
        tolerance=parity_tolerance,
        random_state=seed,
        grid=grid,
        features=None if features is None else training.parse_feature_list(features),
        name=name,
    )
    training.validate_config(config)  # before the progress bar: a bad option is one line, nothing else
    result = training.train_with_progress(config)
    for line in training.summary_lines(result):
        typer.echo(line)
