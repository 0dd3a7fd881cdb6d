"""Reference rows from a CSV file: the model's test set that the verifier scores with both engines.

Why a reader of its own: the job ships `flink_pipeline` and `experiment` only, so it cannot use the training code's
validated loader, and the verifier itself never reads files. This reader is deliberately small and exact: the
standard library's `csv` and `float` (correctly rounded, so a value means the same double as in the file), the
first column taken as the row id (``customer_id``) and skipped, an empty cell read as a missing value (NaN).
Anything else that is not a number is refused with the file, line and column, as a `ModelError`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiment.core.errors import ModelError

__all__ = ["TEST_SET_FILE", "ReferenceRows", "read_reference_rows", "read_rows_csv"]

#: The test set's file name inside a data directory (features only; labels are not needed to compare engines).
TEST_SET_FILE = "X_test.csv"


@dataclass(frozen=True, eq=False)
class ReferenceRows:
    """Rows read from a CSV: feature column names, a float64 (rows × columns) matrix, and where they came from."""

    columns: tuple[str, ...]
    values: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.values)

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """The rows as a (rows × `names`) float64 matrix, matched by column name; absent columns count as 0."""
        index: dict[str, int] = {}
        for j, column in enumerate(self.columns):
            index.setdefault(column, j)
        out = np.zeros((len(self.values), len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            if name in index:
                out[:, j] = self.values[:, index[name]]
        return out


def read_reference_rows(where: str | Path) -> ReferenceRows:
    """A data directory's ``X_test.csv``, or one CSV file (first column the row id): the rows to verify a model on."""
    path = Path(where)
    if path.is_dir():
        return read_rows_csv(path / TEST_SET_FILE, source=f"test set {path / TEST_SET_FILE}")
    if path.is_file():
        return read_rows_csv(path, source=f"file {path}")
    raise ModelError(f"reference rows {path} are neither a data directory nor a CSV file")


def read_rows_csv(path: Path, *, source: str | None = None) -> ReferenceRows:
    """Read one CSV of numbers whose first column is a row id; blank lines are skipped."""
    described = source or f"file {path}"
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            lines = csv.reader(handle)
            header = next(lines, None)
            if header is None:
                raise ModelError(f"{path}: empty reference rows file, expected a header line")
            if len(header) < 2:
                raise ModelError(f"{path}: expected an id column followed by feature columns, got header {header}")
            columns = tuple(name.strip() for name in header[1:])
            rows = [_parse_row(path, lines.line_num, columns, cells) for cells in lines if cells]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ModelError(f"{path}: cannot read reference rows ({error})") from error
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
    return ReferenceRows(columns=columns, values=values, source=described)


def _parse_row(path: Path, line: int, columns: Sequence[str], cells: Sequence[str]) -> list[float]:
    if len(cells) != len(columns) + 1:
        raise ModelError(f"{path} line {line}: {len(cells)} cells, expected {len(columns) + 1} as in the header")
    out = []
    for column, cell in zip(columns, cells[1:], strict=True):
        text = cell.strip()
        if not text:
            out.append(math.nan)
            continue
        try:
            out.append(float(text))
        except ValueError:
            raise ModelError(f"{path} line {line}, column '{column}': got {cell!r}, expected a number") from None
    return out
