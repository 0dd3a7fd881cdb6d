"""Loading validates the seed's layout: one clear error per kind of bad input, naming file, row/id and column."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data import generator
from experiment.cli.main import app
from experiment.core.errors import DataValidationError
from training.dataset import data_fingerprint, load_dataset, load_split


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    generator.write(generator.generate(customers=60, categories=8, seed=1), directory)
    return directory


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _set_cell(path: Path, line: int, column: str, value: str) -> str:
    """Replace one cell (``line`` is 1-based, header = 1); return that row's customer id."""
    lines = _lines(path)
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    _write(path, lines)
    return cells[0]


def _expect(data_dir: Path, pattern: str) -> str:
    with pytest.raises(DataValidationError) as info:
        load_dataset(data_dir)
    message = str(info.value)
    assert re.search(pattern, message), message
    return message


def test_valid_data_loads(data_dir):
    data = load_dataset(data_dir)
    assert data.feature_names == ("age", "man", "woman", *[f"cat{j}" for j in range(1, 9)])
    assert len(data.X_train) == 48 and len(data.X_test) == 12
    assert data.X_train.index.name == "customer_id"
    assert data.y_train.dtype == np.int64 and set(data.y_train.unique()) <= {0, 1}
    assert (data.X_train.dtypes == np.int64).all()
    assert data.fingerprint == data_fingerprint(data_dir)


def test_load_split_returns_features_indexed_by_customer(data_dir):
    x, y = load_split(data_dir, "test")
    assert x.index.name == "customer_id" and (x.index == y.index).all()
    assert x.index[0] == int(_lines(data_dir / "X_test.csv")[1].split(",")[0])


def test_fingerprint_changes_with_any_byte(data_dir):
    before = data_fingerprint(data_dir)
    _set_cell(data_dir / "y_test.csv", 2, "label", "1" if _lines(data_dir / "y_test.csv")[1][-1] == "0" else "0")
    assert data_fingerprint(data_dir) != before


def test_real_csv_variants_load_unchanged(data_dir):
    # A pandas export without an index label, float-formatted integers, and a y column named after the target.
    x = pd.read_csv(data_dir / "X_train.csv", index_col=0)
    x.astype(float).to_csv(data_dir / "X_train.csv", index_label="")
    y = pd.read_csv(data_dir / "y_train.csv", index_col=0).rename(columns={"label": "show_category"})
    y.to_csv(data_dir / "y_train.csv")
    data = load_dataset(data_dir)
    assert (data.X_train.to_numpy() == x.to_numpy()).all()
    assert (data.X_train.dtypes == np.int64).all()
    assert data.y_train.tolist() == y["show_category"].tolist()


def test_missing_file(data_dir):
    (data_dir / "y_test.csv").unlink()
    _expect(data_dir, r"y_test\.csv: file not found")


def test_empty_file(data_dir):
    (data_dir / "X_test.csv").write_text("")
    _expect(data_dir, r"X_test\.csv: not a readable CSV")


def test_header_only(data_dir):
    _write(data_dir / "X_test.csv", _lines(data_dir / "X_test.csv")[:1])
    _expect(data_dir, r"X_test\.csv: no data rows")


def test_duplicate_id(data_dir):
    path = data_dir / "X_train.csv"
    lines = _lines(path)
    duplicate = lines[3].split(",")[0]
    cells = lines[5].split(",")
    cells[0] = duplicate
    lines[5] = ",".join(cells)
    _write(path, lines)
    _expect(data_dir, rf"X_train\.csv: duplicate customer_id {duplicate} on lines 4 and 6, column 'customer_id'")


def test_ids_in_different_order(data_dir):
    path = data_dir / "y_train.csv"
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _write(path, lines)
    x_ids = [line.split(",")[0] for line in _lines(data_dir / "X_train.csv")]
    _expect(data_dir, rf"y_train\.csv line 3, column 'customer_id': got {x_ids[3]}, expected {x_ids[2]}")


def test_y_missing_a_row(data_dir):
    path = data_dir / "y_test.csv"
    lines = _lines(path)
    _write(path, lines[:-1])
    last_id = _lines(data_dir / "X_test.csv")[-1].split(",")[0]
    _expect(data_dir, rf"X_test\.csv line {len(lines)} \(customer_id={last_id}\).*no matching row in .*y_test\.csv")


def test_missing_required_column(data_dir):
    x = pd.read_csv(data_dir / "X_test.csv").drop(columns=["woman"])
    x.to_csv(data_dir / "X_test.csv", index=False)
    _expect(data_dir, r"X_test\.csv: required column 'woman' is missing")


def test_unexpected_column(data_dir):
    x = pd.read_csv(data_dir / "X_train.csv")
    x["income"] = 1
    x.to_csv(data_dir / "X_train.csv", index=False)
    _expect(data_dir, r"X_train\.csv: unexpected column 'income'")


def test_first_column_must_be_the_id(data_dir):
    x = pd.read_csv(data_dir / "X_test.csv").drop(columns=["customer_id"])
    x.to_csv(data_dir / "X_test.csv", index=False)
    _expect(data_dir, r"X_test\.csv: the first column must be the customer id.*Got 'age'")


def test_test_columns_must_match_training(data_dir):
    x = pd.read_csv(data_dir / "X_test.csv")
    x[["customer_id", "age", "woman", "man", *[c for c in x.columns if c.startswith("cat")]]].to_csv(
        data_dir / "X_test.csv", index=False
    )
    _expect(data_dir, r"X_test\.csv: column 3 is 'woman', expected 'man'")


def test_non_numeric_value(data_dir):
    customer = _set_cell(data_dir / "X_train.csv", 7, "cat3", "abc")
    _expect(data_dir, rf"X_train\.csv line 7 \(customer_id={customer}\), column 'cat3': got 'abc', expected a finite")


def test_empty_cell(data_dir):
    customer = _set_cell(data_dir / "X_test.csv", 4, "age", "")
    _expect(data_dir, rf"X_test\.csv line 4 \(customer_id={customer}\), column 'age': got '', expected a finite")


def test_negative_count(data_dir):
    customer = _set_cell(data_dir / "X_train.csv", 10, "cat5", "-2")
    _expect(data_dir, rf"line 10 \(customer_id={customer}\), column 'cat5': got -2, expected a non-negative")


def test_fractional_count(data_dir):
    customer = _set_cell(data_dir / "X_test.csv", 3, "cat1", "1.5")
    _expect(data_dir, rf"line 3 \(customer_id={customer}\), column 'cat1': got 1.5, expected an integer")


@pytest.mark.parametrize("age", ["7", "150", "-1"])
def test_implausible_age(data_dir, age):
    customer = _set_cell(data_dir / "X_train.csv", 2, "age", age)
    _expect(data_dir, rf"X_train\.csv line 2 \(customer_id={customer}\), column 'age': got {age}, expected an age")


def test_gender_indicator_not_binary(data_dir):
    customer = _set_cell(data_dir / "X_train.csv", 5, "man", "2")
    _expect(data_dir, rf"line 5 \(customer_id={customer}\), column 'man': got 2, expected 0 or 1")


def test_both_genders(data_dir):
    path = data_dir / "X_test.csv"
    _set_cell(path, 2, "man", "1")
    customer = _set_cell(path, 2, "woman", "1")
    _expect(data_dir, rf"X_test\.csv line 2 \(customer_id={customer}\), column 'woman': got man=1 and woman=1")


def test_label_outside_0_1(data_dir):
    customer = _set_cell(data_dir / "y_train.csv", 6, "label", "2")
    _expect(data_dir, rf"y_train\.csv line 6 \(customer_id={customer}\), column 'label': got 2, expected a label")


def test_overlapping_splits(data_dir):
    train_id = _lines(data_dir / "X_train.csv")[1].split(",")[0]
    for name in ("X_test.csv", "y_test.csv"):
        lines = _lines(data_dir / name)
        cells = lines[1].split(",")
        cells[0] = train_id
        lines[1] = ",".join(cells)
        _write(data_dir / name, lines)
    _expect(data_dir, rf"X_test\.csv: customer_id {train_id} also appears in .*X_train\.csv")


def test_single_class_training_labels(data_dir):
    y = pd.read_csv(data_dir / "y_train.csv")
    y["label"] = 0
    y.to_csv(data_dir / "y_train.csv", index=False)
    _expect(data_dir, r"y_train\.csv, column 'label': every label is 0")


def test_cli_train_rejects_bad_data_and_writes_nothing(data_dir, tmp_path):
    customer = _set_cell(data_dir / "X_train.csv", 3, "age", "200")
    out = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", "--data", str(data_dir), "--out", str(out), "--quick"])
    assert result.exit_code == 2, result.output
    assert f"line 3 (customer_id={customer}), column 'age': got 200" in result.output
    assert result.output.count("error:") == 1
    assert not out.exists()
