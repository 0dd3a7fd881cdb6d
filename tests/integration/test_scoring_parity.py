"""The compiled scorer against the real pypmml engine, on a model trained here by the training code."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiment.core.errors import ModelError
from experiment.model.compiled import CompiledModel, compile_pmml
from experiment.model.digest import sha256_file
from experiment.model.reference import PmmlReference
from experiment.model.rows import read_reference_rows
from experiment.model.verify import probe_rows, verify
from flink_pipeline.scoring import clear_scorer_cache, load_verified_scorer
from tests.helpers.tiny_pmml import tiny_pmml

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Trained:
    data_dir: Path
    pmml: Path
    version: str
    x_test: pd.DataFrame


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A small quick-trained model (real xgboost, nyoka, the PMML fix and its parity gate)."""
    from data.generator import generate, write
    from training.dataset import load_split
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("scoring_model")
    write(generate(customers=2000, categories=10, seed=11), root / "data")
    result = train(TrainConfig(data_dir=root / "data", out_dir=root / "model", quick=True, n_jobs=1))
    pmml = result.files["pmml"]
    x_test, _ = load_split(root / "data", "test")
    return Trained(data_dir=root / "data", pmml=pmml, version=result.model_version, x_test=x_test)


@pytest.fixture(scope="module")
def reference(trained: Trained):
    with PmmlReference(trained.pmml) as ref:
        yield ref


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_scorer_cache()
    yield
    clear_scorer_cache()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert np.array_equal(np.isnan(a), np.isnan(b)), "the engines disagree on which rows have no prediction"
    ok = ~np.isnan(a)
    return float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else 0.0


def test_verified_scorer_equals_pypmml_on_the_test_set(trained: Trained, reference: PmmlReference) -> None:
    started = time.perf_counter()
    scorer = load_verified_scorer(trained.pmml, trained.version, trained.data_dir)
    load_seconds = time.perf_counter() - started
    assert scorer.kind == "compiled"
    assert scorer.parity is not None and scorer.parity.passed
    assert scorer.parity.rows == len(trained.x_test) + 1000
    # the job side read X_test.csv itself (no training import) and passed the rows in
    test_set = trained.data_dir / "X_test.csv"
    assert scorer.parity.rows_source == f"{len(trained.x_test)} test set {test_set} + 1000 probe rows"
    assert scorer.parity.max_abs_diff <= 1e-9
    assert load_seconds < 60, f"verification took {load_seconds:.1f}s"
    assert sha256_file(trained.pmml) == trained.version == scorer.model_version

    # independent re-check, both paths, against pypmml
    expected = reference.predict(trained.x_test)
    assert not np.isnan(expected).any()
    batch = scorer.score_batch(trained.x_test)
    one = np.array([scorer.score_one(row) for row in trained.x_test.to_dict("records")])
    assert _max_diff(batch, expected) <= 1e-9
    assert _max_diff(one, expected) <= 1e-9
    # and the model is the one training evaluated (native scores; the training gate's own 1e-6 bound)
    native = pd.read_csv(trained.pmml.parent / "predictions_test.csv", index_col="customer_id")["p_native"]
    assert np.max(np.abs(batch - native.loc[trained.x_test.index].to_numpy())) <= 1e-6
    card = json.loads((trained.pmml.parent / "model.json").read_text())
    assert trained.version in json.dumps(card)


def test_each_model_version_is_loaded_once_per_process(trained: Trained) -> None:
    first = load_verified_scorer(trained.pmml, trained.version, trained.data_dir)
    started = time.perf_counter()
    again = load_verified_scorer(trained.pmml, trained.version.upper(), trained.data_dir)
    assert again is first
    assert time.perf_counter() - started < 0.5


def test_rows_read_by_the_job_side_equal_the_training_loaders(trained: Trained, reference: PmmlReference) -> None:
    rows = read_reference_rows(trained.data_dir)
    names = reference.feature_names
    np.testing.assert_array_equal(rows.matrix(names), trained.x_test[list(names)].to_numpy(dtype=np.float64))


def test_missing_values_and_absent_columns_match_pypmml(trained: Trained, reference: PmmlReference) -> None:
    rng = np.random.default_rng(5)
    frame = trained.x_test.astype(float)
    frame = frame.mask(rng.random(frame.shape) < 0.03)
    frame = frame.drop(columns=["cat2", "age"])  # absent columns count as 0 in both engines
    compiled = compile_pmml(trained.pmml.read_bytes())
    expected = reference.predict(frame)
    assert 0 < np.isnan(expected).sum() < len(frame)  # some rows hit a missing split value, most do not
    assert _max_diff(compiled.score_batch(frame), expected) <= 1e-9
    one = np.array(
        [compiled.score_one({k: v for k, v in row.items() if k in frame.columns}) for row in frame.to_dict("records")]
    )
    assert _max_diff(one, expected) <= 1e-9


def test_pypmml_alone_returns_nan_for_an_absent_key_and_the_reference_fills_zero(
    trained: Trained, reference: PmmlReference
) -> None:
    from pypmml import Model

    row = trained.x_test.iloc[0].to_dict()
    row.pop("age")
    raw = Model.fromFile(str(trained.pmml)).predict(row)
    assert all(math.isnan(v) for k, v in raw.items() if "probability" in k)
    filled = reference.predict_one(row)
    assert filled == pytest.approx(reference.predict_one({**row, "age": 0.0}), abs=0)
    assert not math.isnan(filled)


@pytest.mark.parametrize(
    "variant",
    [
        {"op": "lessThan"},
        {"op": "lessOrEqual"},
        {"op": "greaterThan"},
        {"op": "greaterOrEqual"},
        {"internal_score": 0.3},
        {"internal_score": 0.3, "tree_attrs": 'noTrueChildStrategy="returnNullPrediction"'},
        {"internal_score": 0.3, "tree_attrs": 'missingValueStrategy="lastPrediction"'},
        {"internal_score": 0.3, "tree_attrs": 'missingValueStrategy="nullPrediction"'},
        {"second": "true", "tree_attrs": 'missingValueStrategy="none"'},
        {"tree_attrs": 'missingValueStrategy="defaultChild"', "default_child": True},
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v),
)
def test_tiny_models_semantics_equal_pypmml(tmp_path: Path, variant: dict) -> None:
    """Every comparison operator and missing-value rule the compiler implements, checked against pypmml."""
    path = tmp_path / "tiny.pmml"
    path.write_text(tiny_pmml(**variant))
    values_a = [2.0, math.nextafter(2.0, 0.0), math.nextafter(2.0, 3.0), 1.0, 3.0, math.nan]
    values_b = [3.0, math.nextafter(3.0, 0.0), 2.0, 4.0, math.nan]
    rows = np.array([[a, b] for a in values_a for b in values_b])
    compiled = compile_pmml(path.read_bytes())
    with PmmlReference(path) as ref:
        expected = ref.predict(rows)
    assert _max_diff(compiled.score_batch(rows), expected) <= 1e-15
    one = np.array([compiled.score_one({"a": a, "b": b}) for a, b in rows])
    assert _max_diff(one, expected) <= 1e-15


def test_unsupported_pmml_is_refused_or_falls_back_loudly(tmp_path: Path, caplog) -> None:
    path = tmp_path / "norm.pmml"
    # a scaler written as NormContinuous: valid PMML that pypmml scores, but not our exporter's shape
    path.write_text(
        tiny_pmml(
            derived='<NormContinuous field="a"><LinearNorm orig="1.5" norm="0"/>'
            '<LinearNorm orig="3.5" norm="1"/></NormContinuous>'
        )
    )
    version = sha256_file(path)
    with pytest.raises(ModelError, match=r"cannot compile.*NormContinuous"):
        load_verified_scorer(path, version)
    with caplog.at_level(logging.ERROR, logger="experiment.model.scorer"):
        scorer = load_verified_scorer(path, version, fallback=True)
    assert scorer.kind == "pypmml"
    assert any("FALLBACK" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    with PmmlReference(path) as ref:
        assert scorer.score_one({"a": 2.5, "b": 1.0}) == ref.predict_one({"a": 2.5, "b": 1.0})
        rows = np.array([[2.5, 1.0], [0.0, 4.0]])
        np.testing.assert_array_equal(scorer.score_batch(rows), ref.predict(rows))


def test_parity_failure_refuses_with_numbers_or_falls_back(trained: Trained, caplog) -> None:
    # A negative tolerance makes even identical scores "differ": it exercises the refusal path end to end.
    with pytest.raises(ModelError, match=r"max \|dP\| = .* > tolerance -1 on \d+ of \d+ rows"):
        load_verified_scorer(trained.pmml, trained.version, trained.data_dir, tolerance=-1.0)
    with caplog.at_level(logging.ERROR, logger="experiment.model.scorer"):
        scorer = load_verified_scorer(trained.pmml, trained.version, trained.x_test, tolerance=-1.0, fallback=True)
    assert scorer.kind == "pypmml" and scorer.parity is not None and not scorer.parity.passed
    assert any(r.levelno == logging.ERROR and "FALLBACK" in r.getMessage() for r in caplog.records)


def test_probe_rows_catch_an_operator_error_the_test_set_can_miss(trained: Trained, reference) -> None:
    compiled = compile_pmml(trained.pmml.read_bytes())

    def flip(node):
        if node.is_leaf:
            return node
        return dataclasses.replace(node, op="lessOrEqual", first=flip(node.first), second=flip(node.second))

    broken = CompiledModel(dataclasses.replace(compiled.spec, trees=tuple(flip(t) for t in compiled.spec.trees)))
    report = verify(broken, reference, probe_rows(compiled.spec, n=500))
    assert not report.passed
    assert report.rows_over_tolerance > 50
    assert report.max_abs_diff > 1e-6
