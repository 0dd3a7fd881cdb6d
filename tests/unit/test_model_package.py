"""The model package's own pieces: the one file hash, the reference-row reader, the IR walk, the job-side loader.

No JVM here: pypmml is never started (the job-side loader is tested with the verifier replaced by a recorder).
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiment.core.errors import ModelError
from experiment.model.digest import sha256_file
from experiment.model.ir import split_fields, split_nodes
from experiment.model.parse import parse_pmml
from experiment.model.pmml_xml import parse_xml, serialize_pmml
from experiment.model.rows import ReferenceRows, read_reference_rows, read_rows_csv
from tests.helpers.tiny_pmml import tiny_pmml

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ the one sha256 helper


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 17])
def test_sha256_file_equals_hashlib_on_the_whole_bytes(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(str(path)) == expected


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=4096))
def test_sha256_file_equals_hashlib_for_any_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("sha") / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_of_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent.pmml")


def test_every_old_hash_name_is_the_one_helper() -> None:
    import experiment.kafka.jars as jars
    import experiment.model.card as card

    assert card.sha256_file is sha256_file
    assert jars.sha256_file is sha256_file
    assert not hasattr(jars, "_sha256")


# ------------------------------------------------------------------ the reference-row reader


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_skip_the_id_column_and_read_exact_doubles(tmp_path: Path) -> None:
    csv = _write(tmp_path / "rows.csv", "customer_id,age,cat1\n7,33,0.1\n8, 41.5 ,1e-320\n")
    rows = read_rows_csv(csv)
    assert rows.columns == ("age", "cat1")
    assert len(rows) == 2
    np.testing.assert_array_equal(rows.values, [[33.0, 0.1], [41.5, 1e-320]])
    assert rows.source == f"file {csv}"


def test_rows_empty_cells_are_missing_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    csv = _write(tmp_path / "rows.csv", "\ufeffid,a,b\n1,,2\n\n2,3,\n")
    rows = read_rows_csv(csv)
    assert rows.columns == ("a", "b")
    assert math.isnan(rows.values[0, 0]) and rows.values[0, 1] == 2.0
    assert rows.values[1, 0] == 3.0 and math.isnan(rows.values[1, 1])


def test_rows_with_only_a_header_are_zero_rows(tmp_path: Path) -> None:
    rows = read_rows_csv(_write(tmp_path / "rows.csv", "id,a,b\n"))
    assert rows.values.shape == (0, 2)
    assert rows.matrix(["b"]).shape == (0, 1)


def test_matrix_matches_columns_by_name_and_fills_absent_ones_with_zero(tmp_path: Path) -> None:
    rows = ReferenceRows(columns=("b", "a"), values=np.array([[1.0, 2.0], [3.0, 4.0]]), source="x")
    np.testing.assert_array_equal(rows.matrix(["a", "missing", "b"]), [[2.0, 0.0, 1.0], [4.0, 0.0, 3.0]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty reference rows file"),
        ("id\n1\n", "expected an id column followed by feature columns"),
        ("id,a,b\n1,2\n", "line 2: 2 cells, expected 3"),
        ("id,a,b\n1,2,3\n2,x,3\n", "line 3, column 'a': got 'x', expected a number"),
    ],
)
def test_unreadable_rows_are_refused_with_the_place(tmp_path: Path, text: str, message: str) -> None:
    csv = _write(tmp_path / "rows.csv", text)
    with pytest.raises(ModelError, match="rows") as info:
        read_rows_csv(csv)
    assert str(info.value).startswith(f"{csv}")
    assert message in str(info.value)


def test_a_data_directory_means_its_test_set(tmp_path: Path) -> None:
    _write(tmp_path / "X_test.csv", "customer_id,a\n1,5\n")
    rows = read_reference_rows(tmp_path)
    assert rows.source == f"test set {tmp_path / 'X_test.csv'}"
    assert rows.values.tolist() == [[5.0]]
    assert read_reference_rows(str(tmp_path / "X_test.csv")).source == f"file {tmp_path / 'X_test.csv'}"


def test_a_directory_without_a_test_set_or_an_absent_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read reference rows"):
        read_reference_rows(tmp_path)
    with pytest.raises(ModelError, match="neither a data directory nor a CSV file"):
        read_reference_rows(tmp_path / "absent")


def test_rows_equal_the_training_loaders_values_on_generated_data(tmp_path: Path) -> None:
    from data.generator import generate, write
    from training.dataset import load_split

    write(generate(customers=600, categories=8, seed=3), tmp_path)
    expected, _ = load_split(tmp_path, "test")
    rows = read_reference_rows(tmp_path)
    assert rows.columns == tuple(expected.columns)
    np.testing.assert_array_equal(rows.values, expected.to_numpy(dtype=np.float64))


# ------------------------------------------------------------------ the package boundary and shared pieces


def test_the_model_package_imports_no_training_pyflink_or_kafka() -> None:
    """The job ships `flink_pipeline` and `experiment` only: nothing the model code imports may live elsewhere."""
    modules = sorted(p.stem for p in (REPO / "experiment" / "model").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('experiment.model.' + name)\n"
        "importlib.import_module('flink_pipeline.scoring')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'training', 'pyflink', 'kafka', 'pypmml'})\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert {"scorer", "verify", "compiled", "parse", "batch", "codegen", "ir", "rows", "card"} <= set(modules)


def test_every_model_module_stays_small() -> None:
    for path in (REPO / "experiment" / "model").glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 600, path.name


def test_split_nodes_walks_every_split_depth_first_in_segment_order() -> None:
    spec = parse_pmml(tiny_pmml().encode())
    nodes = list(split_nodes(spec.trees))
    assert [(n.field, n.threshold) for n in nodes] == [("s(a)", 0.25), ("b", 3.0)]
    assert all(not n.is_leaf for n in nodes)
    assert split_fields(spec) == ["s(a)", "b"]


def test_the_shared_xml_parser_refuses_with_one_wording_for_the_fix_and_the_compiler() -> None:
    from experiment.model import pmml_fix

    assert pmml_fix.parse_pmml is parse_xml
    with pytest.raises(ModelError, match=r"^refusing PMML x\.pmml: it is not well-formed XML"):
        parse_xml(b"<PMML>", source="x.pmml")
    with pytest.raises(ModelError, match=r"^refusing PMML x\.pmml: it is not well-formed XML"):
        parse_pmml(b"<PMML>", source="x.pmml")
    root = parse_xml(tiny_pmml())
    assert serialize_pmml(root).startswith(b"<?xml")


# ------------------------------------------------------------------ the job-side loader: reads rows, caches


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, path: Path, version: str, rows: object, **kwargs: object) -> object:
        self.calls.append(rows)
        return object()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch):
    import flink_pipeline.scoring as scoring

    record = _Recorder()
    monkeypatch.setattr(scoring, "build_verified_scorer", record)
    scoring.clear_scorer_cache()
    yield record
    scoring.clear_scorer_cache()


def test_the_job_side_reads_a_path_into_rows_once_per_version(recorder: _Recorder, tmp_path: Path) -> None:
    from flink_pipeline.scoring import load_verified_scorer

    _write(tmp_path / "X_test.csv", "customer_id,a,b\n1,2,3\n")
    first = load_verified_scorer(tmp_path / "m.pmml", "AB" * 32, tmp_path)
    again = load_verified_scorer(tmp_path / "m.pmml", "ab" * 32, tmp_path / "elsewhere")
    assert again is first and len(recorder.calls) == 1
    (rows,) = recorder.calls
    assert isinstance(rows, ReferenceRows) and rows.values.tolist() == [[2.0, 3.0]]


def test_the_job_side_passes_rows_in_memory_through(recorder: _Recorder, tmp_path: Path) -> None:
    from flink_pipeline.scoring import load_verified_scorer

    frame = pd.DataFrame({"a": [1.0]})
    load_verified_scorer(tmp_path / "m.pmml", "ab" * 32, frame)
    load_verified_scorer(tmp_path / "n.pmml", "ab" * 32, None)
    assert recorder.calls[0] is frame and recorder.calls[1] is None


def test_the_job_side_refuses_unreadable_rows(recorder: _Recorder, tmp_path: Path) -> None:
    from flink_pipeline.scoring import load_verified_scorer

    with pytest.raises(ModelError, match="neither a data directory nor a CSV file"):
        load_verified_scorer(tmp_path / "m.pmml", "ab" * 32, tmp_path / "absent")
    assert recorder.calls == []
