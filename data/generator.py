"""Write the seed's four CSVs from the ground-truth model, deterministically per seed.

Why: the product must run end to end without the real export, and a simulated experiment needs data whose true
answer is known (see `data.ground_truth`). The layout is exactly the seed's, so a real export can replace it:

- ``X_train.csv`` / ``X_test.csv``: ``customer_id`` (the index), ``age``, ``man``, ``woman``, ``cat1..catK``;
- ``y_train.csv`` / ``y_test.csv``: ``customer_id``, ``label`` (0/1).

One ``numpy.random.default_rng(seed)`` draws, in this order: the features, the labels, then the split (a
random permutation; the first ``round(n * test_fraction)`` customers go to the test set). Rows are written in
customer-id order. Same arguments, same bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data import ground_truth
from experiment.core.errors import ConfigError

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_CUSTOMERS",
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "FILE_NAMES",
    "GeneratedData",
    "generate",
    "write",
]

logger = logging.getLogger(__name__)

DEFAULT_CUSTOMERS = 20_000
DEFAULT_CATEGORIES = 60
DEFAULT_SEED = 7
DEFAULT_TEST_FRACTION = 0.2
FILE_NAMES = ("X_train.csv", "X_test.csv", "y_train.csv", "y_test.csv")
_MIN_PER_SPLIT = 2


@dataclass(frozen=True)
class GeneratedData:
    """The four tables, indexed by ``customer_id``; ``y_*`` have the single column ``label``."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.DataFrame
    y_test: pd.DataFrame


def generate(
    customers: int = DEFAULT_CUSTOMERS,
    categories: int = DEFAULT_CATEGORIES,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> GeneratedData:
    """Sample customers and labels from the ground truth and split them (pure: no files)."""
    if categories < ground_truth.MIN_CATEGORIES:
        raise ConfigError(
            f"--categories must be at least {ground_truth.MIN_CATEGORIES} "
            f"(the ground truth uses cat2..cat7). Got {categories}."
        )
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"The test fraction must be in (0, 1). Got {test_fraction}.")
    n_test = round(customers * test_fraction)
    if n_test < _MIN_PER_SPLIT or customers - n_test < _MIN_PER_SPLIT:
        raise ConfigError(
            f"--customers {customers} with test fraction {test_fraction} leaves "
            f"{customers - n_test} training and {n_test} test customers; "
            f"each split needs at least {_MIN_PER_SPLIT}."
        )
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0. Got {seed}.")
    rng = np.random.default_rng(seed)
    features = ground_truth.sample_customers(customers, categories, rng)
    labels = pd.DataFrame({"label": ground_truth.sample_labels(features, rng)}, index=features.index)
    order = rng.permutation(customers)
    test_ids = np.sort(features.index.to_numpy()[order[:n_test]])
    train_ids = np.sort(features.index.to_numpy()[order[n_test:]])
    logger.info(
        "generated customers=%d categories=%d seed=%d positive_rate=%.4f",
        customers,
        categories,
        seed,
        float(labels["label"].mean()),
    )
    return GeneratedData(
        X_train=features.loc[train_ids],
        X_test=features.loc[test_ids],
        y_train=labels.loc[train_ids],
        y_test=labels.loc[test_ids],
    )


def write(data: GeneratedData, out_dir: Path) -> list[Path]:
    """Write the four CSVs into ``out_dir`` (created if needed); each file appears whole or not at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = (data.X_train, data.X_test, data.y_train, data.y_test)
    paths = []
    for name, table in zip(FILE_NAMES, tables, strict=True):
        path = out_dir / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
        try:
            with os.fdopen(fd, "w", newline="") as handle:
                table.to_csv(handle, index=True, index_label="customer_id", lineterminator="\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
        logger.info("wrote path=%s rows=%d", path, len(table))
    return paths
