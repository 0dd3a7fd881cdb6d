"""Load and validate the seed's four CSVs; any violation is one `DataValidationError` that names everything.

Why strict: a model trained on a shifted id column or a mislabelled row is silently wrong, and everything
downstream (the PMML, the experiment, the lift) would inherit the error. So loading checks, per file:

- the file exists, parses as CSV and has at least one data row;
- the first column is the customer id (any header except a feature or label name; the seed writes
  ``customer_id``); ids are non-empty and unique;
- X files hold exactly ``age``, ``man``, ``woman`` and one or more ``cat<j>`` columns; the test file has the
  training file's columns in the same order; every cell is a finite number; ``age`` lies in [10, 120];
  ``man`` and ``woman`` are 0/1 and not both 1; purchase counts are non-negative integers;
- y files hold one label column (``label``, or the only column after the id) with values in {0, 1};
- X and y of a split hold the same ids in the same order; the splits are disjoint; training has both classes.

Messages read ``<file> line <n> (customer_id=<id>), column '<col>': got <value>, expected <what>.`` where
``line`` is the 1-based line in the file (the header is line 1). Real CSVs in the layout load unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from experiment.core.errors import DataValidationError

__all__ = [
    "AGE_RANGE",
    "FILE_NAMES",
    "Dataset",
    "Split",
    "data_fingerprint",
    "load_dataset",
    "load_split",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
FILE_NAMES = ("X_train.csv", "X_test.csv", "y_train.csv", "y_test.csv")
AGE_RANGE = (10.0, 120.0)
"""Inclusive bounds of a plausible customer age, in years."""

_BASE_FEATURES = ("age", "man", "woman")
_CATEGORY = re.compile(r"^cat[1-9]\d*$")
_LABEL = "label"


@dataclass(frozen=True)
class Dataset:
    """Both splits, indexed by ``customer_id``; ``y_*`` are 0/1 int Series named ``label``."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    feature_names: tuple[str, ...]
    fingerprint: str


def _where(path: Path, row: int, customer_id: object) -> str:
    return f"{path} line {row + 2} (customer_id={customer_id})"


def _read_raw(path: Path) -> pd.DataFrame:
    """Read every cell as text so that validation, not pandas' guessing, decides what a value means."""
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataValidationError(f"{path}: not a readable CSV file ({error}).") from error
    if frame.shape[1] < 2:
        raise DataValidationError(
            f"{path}: expected a customer id column followed by data columns. Got columns {list(frame.columns)}."
        )
    if frame.empty:
        raise DataValidationError(f"{path}: no data rows after the header.")
    return frame


def _ids(path: Path, frame: pd.DataFrame, reserved: set[str]) -> pd.Index:
    """The first column as the customer-id index: non-empty, unique; integer ids become ints."""
    id_column = str(frame.columns[0])
    if id_column in reserved:
        raise DataValidationError(
            f"{path}: the first column must be the customer id (the seed writes 'customer_id'). Got '{id_column}'."
        )
    raw = frame.iloc[:, 0].str.strip()
    empty = np.flatnonzero(raw.to_numpy() == "")
    if empty.size:
        row = int(empty[0])
        raise DataValidationError(f"{_where(path, row, '')}, column '{id_column}': empty customer id.")
    duplicated = raw.duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated)
        first = raw.iloc[rows[0]]
        same = [int(r) + 2 for r in rows if raw.iloc[r] == first]
        raise DataValidationError(
            f"{path}: duplicate customer_id {first} on lines {same[0]} and {same[1]}, column '{id_column}'."
        )
    if raw.str.fullmatch(r"[+-]?\d+").all():
        return pd.Index(raw.astype(np.int64).to_numpy(), name="customer_id")
    return pd.Index(raw.to_numpy(), name="customer_id")


def _numeric(path: Path, frame: pd.DataFrame, ids: pd.Index, column: str) -> np.ndarray:
    """A column as finite floats, or an error naming the first bad cell."""
    text = frame[column]
    values = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise DataValidationError(
            f"{_where(path, row, ids[row])}, column '{column}': got {text.iloc[row]!r}, expected a finite number."
        )
    return values


def _first_violation(path: Path, ids: pd.Index, column: str, values: np.ndarray, ok: np.ndarray, expected: str) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        row = int(bad[0])
        value = values[row]
        shown = int(value) if float(value).is_integer() else value
        raise DataValidationError(
            f"{_where(path, row, ids[row])}, column '{column}': got {shown}, expected {expected}."
        )


def _as_column(values: np.ndarray) -> np.ndarray:
    """Integers stay integers (so ids and counts print as the seed wrote them); anything else is float."""
    if np.all(values == np.floor(values)):
        return values.astype(np.int64)
    return values


def _load_features(path: Path) -> pd.DataFrame:
    frame = _read_raw(path)
    ids = _ids(path, frame, reserved={*_BASE_FEATURES, _LABEL})
    columns = [str(c) for c in frame.columns[1:]]
    for required in _BASE_FEATURES:
        if required not in columns:
            raise DataValidationError(f"{path}: required column '{required}' is missing. Got columns {columns}.")
    unknown = [c for c in columns if c not in _BASE_FEATURES and not _CATEGORY.match(c)]
    if unknown:
        raise DataValidationError(
            f"{path}: unexpected column '{unknown[0]}'; the layout is age, man, woman, cat1..catK."
        )
    categories = [c for c in columns if _CATEGORY.match(c)]
    if not categories:
        raise DataValidationError(f"{path}: no purchase-count columns 'cat<j>'. Got columns {columns}.")
    out: dict[str, np.ndarray] = {}
    for column in columns:
        values = _numeric(path, frame, ids, column)
        if column == "age":
            low, high = AGE_RANGE
            ok = (values >= low) & (values <= high)
            _first_violation(path, ids, column, values, ok, f"an age in [{low:g}, {high:g}]")
        elif column in ("man", "woman"):
            _first_violation(path, ids, column, values, np.isin(values, (0.0, 1.0)), "0 or 1")
        else:
            _first_violation(path, ids, column, values, values >= 0, "a non-negative purchase count")
            _first_violation(path, ids, column, values, values == np.floor(values), "an integer purchase count")
        out[column] = _as_column(values)
    both = (out["man"] == 1) & (out["woman"] == 1)
    if both.any():
        row = int(np.flatnonzero(both)[0])
        raise DataValidationError(
            f"{_where(path, row, ids[row])}, column 'woman': got man=1 and woman=1, expected at most one of them."
        )
    return pd.DataFrame(out, index=ids, columns=columns)


def _load_labels(path: Path) -> pd.Series:
    frame = _read_raw(path)
    ids = _ids(path, frame, reserved={_LABEL, *_BASE_FEATURES})
    columns = [str(c) for c in frame.columns[1:]]
    if _LABEL in columns:
        column = _LABEL
    elif len(columns) == 1:
        column = columns[0]
    else:
        raise DataValidationError(f"{path}: expected one label column 'label' after the id. Got columns {columns}.")
    values = _numeric(path, frame, ids, column)
    _first_violation(path, ids, column, values, np.isin(values, (0.0, 1.0)), "a label in {0, 1}")
    return pd.Series(values.astype(np.int64), index=ids, name=_LABEL)


def _check_aligned(x_path: Path, y_path: Path, x_ids: pd.Index, y_ids: pd.Index) -> None:
    n = min(len(x_ids), len(y_ids))
    mismatch = np.flatnonzero(x_ids[:n].astype(str) != y_ids[:n].astype(str))
    if mismatch.size:
        row = int(mismatch[0])
        raise DataValidationError(
            f"{y_path} line {row + 2}, column 'customer_id': got {y_ids[row]}, expected {x_ids[row]} "
            f"(line {row + 2} of {x_path}); X and y must hold the same ids in the same order."
        )
    if len(x_ids) != len(y_ids):
        longer, other = (x_path, y_path) if len(x_ids) > len(y_ids) else (y_path, x_path)
        extra = (x_ids if len(x_ids) > len(y_ids) else y_ids)[n]
        raise DataValidationError(
            f"{longer} line {n + 2} (customer_id={extra}), column 'customer_id': no matching row in {other} "
            f"({len(x_ids)} X rows vs {len(y_ids)} y rows)."
        )


def load_split(data_dir: Path | str, split: Split) -> tuple[pd.DataFrame, pd.Series]:
    """Load ``X_<split>.csv`` and ``y_<split>.csv``: ``(X indexed by customer_id, y)``, validated."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'. Got {split!r}.")
    data_dir = Path(data_dir)
    x_path, y_path = data_dir / f"X_{split}.csv", data_dir / f"y_{split}.csv"
    features = _load_features(x_path)
    labels = _load_labels(y_path)
    _check_aligned(x_path, y_path, features.index, labels.index)
    logger.debug("loaded split=%s rows=%d features=%d", split, len(features), features.shape[1])
    return features, labels


def data_fingerprint(data_dir: Path | str) -> str:
    """sha256 over the four files' names and bytes in `FILE_NAMES` order: changes iff the data does."""
    digest = hashlib.sha256()
    for name in FILE_NAMES:
        content = (Path(data_dir) / name).read_bytes()
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def load_dataset(data_dir: Path | str) -> Dataset:
    """Load both splits and check that the test file has the training file's features in the same order."""
    data_dir = Path(data_dir)
    x_train, y_train = load_split(data_dir, "train")
    x_test, y_test = load_split(data_dir, "test")
    train_columns, test_columns = list(x_train.columns), list(x_test.columns)
    if train_columns != test_columns:
        position = next(
            (i for i, (a, b) in enumerate(zip(train_columns, test_columns, strict=False)) if a != b),
            min(len(train_columns), len(test_columns)),
        )
        got = test_columns[position] if position < len(test_columns) else "<none>"
        want = train_columns[position] if position < len(train_columns) else "<none>"
        raise DataValidationError(
            f"{data_dir / 'X_test.csv'}: column {position + 2} is '{got}', expected '{want}' "
            f"(X_test.csv must have X_train.csv's columns in the same order)."
        )
    overlap = x_train.index.intersection(x_test.index)
    if len(overlap):
        raise DataValidationError(
            f"{data_dir / 'X_test.csv'}: customer_id {overlap[0]} also appears in "
            f"{data_dir / 'X_train.csv'}; the splits must be disjoint."
        )
    if math.isclose(float(y_train.mean()), 0.0) or math.isclose(float(y_train.mean()), 1.0):
        raise DataValidationError(
            f"{data_dir / 'y_train.csv'}, column 'label': every label is {int(y_train.iloc[0])}; "
            "training needs both classes."
        )
    return Dataset(
        X_train=x_train,
        y_train=y_train,
        X_test=x_test,
        y_test=y_test,
        feature_names=tuple(train_columns),
        fingerprint=data_fingerprint(data_dir),
    )
