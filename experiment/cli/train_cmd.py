"""`abflow train`: grid-search the XGBoost pipeline, export PMML, gate on parity, write model.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["train"]


def train(
    data: Annotated[Path, typer.Option("--data", help="Directory with X/y train/test CSVs.")] = Path("data"),
    out: Annotated[Path, typer.Option("--out", help="Directory for the model artefacts.")] = Path("artifacts/model"),
    quick: Annotated[bool, typer.Option("--quick", help="2x2 grid and 3 folds (tests, demos).")] = False,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.0, max=1.0, help="Decision threshold on P(show).")
    ] = 0.5,
    parity_tolerance: Annotated[
        float, typer.Option("--parity-tolerance", hidden=True, help="Max |P_pmml - P_native| (tests only).")
    ] = 1e-6,
) -> None:
    """Train the targeting model and export a parity-checked PMML (exit 3 when parity fails)."""
    from training import train as training

    config = training.TrainConfig(
        data_dir=data, out_dir=out, quick=quick, threshold=threshold, tolerance=parity_tolerance
    )
    result = training.train_with_progress(config)
    for line in training.summary_lines(result):
        typer.echo(line)
