"""`abflow data generate`: write the seed's four CSVs from the documented ground-truth model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "generate"]

app = typer.Typer(
    help="Synthetic data in the seed's layout, drawn from a documented ground truth.", no_args_is_help=True
)


@app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", help="Directory for X_train/X_test/y_train/y_test.csv.")] = Path("data"),
    customers: Annotated[int, typer.Option("--customers", min=4, help="Number of customers (train + test).")] = 20_000,
    categories: Annotated[int, typer.Option("--categories", min=1, help="Number of purchase categories K.")] = 60,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed; same seed, same bytes.")] = 7,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of customers in the test set.")] = 0.2,
) -> None:
    """Generate the training and test CSVs (deterministic per seed)."""
    from data import generator

    data = generator.generate(customers=customers, categories=categories, seed=seed, test_fraction=test_fraction)
    paths = generator.write(data, out)
    positive = float(data.y_train["label"].mean())
    typer.echo(
        f"wrote {len(data.X_train)} training and {len(data.X_test)} test customers "
        f"with {categories} categories (seed {seed}, positive rate {positive:.3f}) to {out}"
    )
    for path in paths:
        typer.echo(f"  {path}")
